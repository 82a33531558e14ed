import shutil

import pytest
from PIL import Image

from smalldata.data import DataError, load_dataset, load_image_folder, load_text_csv, require_evaluable


def _image(path, colour=(200, 30, 30), size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def test_image_folder_reads_classes_and_reports_every_skipped_file(tmp_path):
    _image(tmp_path / "cat" / "a.png", (10, 10, 10))
    _image(tmp_path / "cat" / "b.jpg", (20, 20, 20))
    _image(tmp_path / "dog" / "c.png", (30, 30, 30))
    _image(tmp_path / "dog" / "deeper" / "d.png", (40, 40, 40))
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    (tmp_path / "dog" / "empty.png").write_bytes(b"")
    good = (tmp_path / "dog" / "c.png").read_bytes()
    (tmp_path / "dog" / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "dog" / ".DS_Store").write_bytes(b"\0")
    _image(tmp_path / "loose.png")

    data = load_image_folder(tmp_path)

    assert data.modality == "image"
    assert data.counts() == {"cat": 2, "dog": 2}
    reasons = {s.what: s.reason for s in data.skipped}
    assert reasons["dog/notes.txt"].startswith("not a readable image")
    assert reasons["dog/empty.png"] == "empty file"
    assert reasons["dog/truncated.png"].startswith("not a readable image")
    assert reasons["dog/.DS_Store"] == "hidden file"
    assert "class folder" in reasons["loose.png"]


def test_labels_from_file_names_with_a_regex(tmp_path):
    for name, colour in [("Abyssinian_1.jpg", (1, 2, 3)), ("Abyssinian_2.jpg", (4, 5, 6)),
                         ("great_pyrenees_10.jpg", (7, 8, 9)), ("README.md", None)]:
        if colour:
            _image(tmp_path / name, colour)
        else:
            (tmp_path / name).write_text("hello")
    data = load_image_folder(tmp_path, label_from_name=r"(.+)_\d+\.jpg$")
    assert sorted(data.labels) == ["Abyssinian", "Abyssinian", "great_pyrenees"]
    assert [s.what for s in data.skipped] == ["README.md"]


def test_exact_duplicates_are_dropped_and_reported_and_conflicts_kept(tmp_path):
    _image(tmp_path / "cat" / "a.png", (1, 1, 1))
    shutil.copy(tmp_path / "cat" / "a.png", tmp_path / "cat" / "copy.png")
    _image(tmp_path / "cat" / "b.png", (2, 2, 2))
    _image(tmp_path / "dog" / "c.png", (3, 3, 3))
    shutil.copy(tmp_path / "cat" / "b.png", tmp_path / "dog" / "b-again.png")

    data = load_image_folder(tmp_path)

    assert len(data) == 4  # a, b, b-again (other label), c
    assert [d.what.endswith("copy.png") for d in data.dropped_duplicates] == [True]
    assert len(data.conflicting_duplicates) == 1 and len(data.conflicting_duplicates[0]) == 2


def test_csv_and_tsv_with_named_columns_and_empty_rows(tmp_path):
    csv_file = tmp_path / "reviews.csv"
    csv_file.write_text('review,stars\n"great, loved it",pos\n,neg\nawful,\nmeh,neg\n')
    data = load_text_csv(csv_file, text_column="review", label_column="stars")
    assert data.inputs == ["great, loved it", "meh"]
    assert [s.reason for s in data.skipped] == ["empty text", "no label"]

    tsv_file = tmp_path / "reviews.tsv"
    tsv_file.write_text("text\tlabel\nfine, I guess\tneutral\nbad\tneg\n")
    assert load_dataset(tsv_file).inputs == ["fine, I guess", "bad"]


def test_missing_column_error_says_which_columns_exist(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("sentence,label\nhi,a\n")
    with pytest.raises(DataError, match=r"columns are \['sentence', 'label'\].*--text-column"):
        load_text_csv(path)


def test_a_class_with_one_example_is_an_error_that_says_what_to_do(topics_csv):
    with open(topics_csv, "a") as handle:
        handle.write("What a lovely hat,fashion\n")
    data = load_dataset(topics_csv)
    with pytest.raises(DataError, match=r"'fashion' has 1.*--drop-small-classes"):
        require_evaluable(data)
    kept = require_evaluable(data, drop_small_classes=True)
    assert "fashion" not in kept.classes
    assert any("fashion" in s.reason for s in kept.skipped)


def test_one_class_is_not_enough(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("text,label\na,x\nb,x\n")
    with pytest.raises(DataError, match="at least 2"):
        require_evaluable(load_text_csv(path))


def test_unknown_path_and_format_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(DataError, match="neither a folder"):
        load_dataset(tmp_path / "model.bin")


def test_a_long_strip_of_pixels_is_refused_before_any_resize(tmp_path):
    # a 99-byte PNG of 20000x1 pixels took 25 s and 4.9 GB when its short side was scaled to 224 px
    from PIL import Image

    from smalldata.images import ImageShapeError, load_rgb
    from smalldata.service.uploads import Limits, UploadError, check_image

    folder = tmp_path / "photos"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (40, 30), (i * 90, 20, 200)).save(folder / label / f"{i}.png")
    strip = folder / "a" / "strip.png"
    Image.new("RGB", (20000, 1)).save(strip)
    assert strip.stat().st_size < 1000
    with pytest.raises(ImageShapeError, match="20000x1 pixels, more than 20 times longer"):
        load_rgb(strip, 224)
    dataset = load_image_folder(folder)
    assert len(dataset) == 4 and any("20000x1" in skipped.reason for skipped in dataset.skipped)
    with pytest.raises(UploadError, match="more than 20 times longer") as refused:
        check_image(strip.read_bytes(), Limits())
    assert refused.value.status == 422


def test_texts_the_tokenizer_or_the_database_cannot_take_are_refused_with_a_422():
    from smalldata.service.uploads import Limits, UploadError, check_text

    for text, why in (("x \udfff", "not valid Unicode"), ("a\x00b", "NUL character")):
        with pytest.raises(UploadError, match=why) as refused:
            check_text(text, Limits())
        assert refused.value.status == 422
    assert check_text("  café ☕  ", Limits()) == "café ☕"


def test_image_files_are_judged_by_size_and_header_before_being_read(tmp_path):
    # Every image file was read whole before PIL looked at it: a 3 GB non-image took 3 GB and 8 s.
    import tracemalloc

    from smalldata.features import content_key, hash_bytes
    from smalldata.images import load_rgb

    for label in ("a", "b"):
        for i in range(2):
            _image(tmp_path / label / f"{i}.png", (i * 90, 20, 200 if label == "a" else 10))
    for name, size in (("a/huge.jpg", 300 * 2**20), ("b/zeros.png", 200 * 2**20)):
        with open(tmp_path / name, "wb") as handle:
            handle.truncate(size)  # sparse: costs no disk
    tracemalloc.start()
    try:
        data = load_image_folder(tmp_path)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    assert peak < 20, f"{peak:.0f} MiB allocated to check 6 files"
    reasons = {s.what: s.reason for s in data.skipped}
    assert reasons["a/huge.jpg"].startswith("the file is 300 MiB, more than the 256 MiB an image may be: give")
    assert reasons["b/zeros.png"].startswith("not a readable image (UnidentifiedImageError")
    assert data.counts() == {"a": 2, "b": 2}
    # hashed in chunks, with the same keys as before (embedding caches stay valid)
    assert data.keys == [hash_bytes(path.read_bytes()) for path in data.inputs]
    assert content_key(data.inputs[0]) == data.keys[0]
    # what the library reads itself is bounded too: refused from the file's size alone
    from smalldata.images import ImageFileError

    for read in (content_key, lambda path: load_rgb(path, 224)):
        with pytest.raises(ImageFileError, match="300 MiB"):
            read(tmp_path / "a" / "huge.jpg")


def test_a_folder_of_no_usable_images_says_why_in_its_error(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "x.jpg").write_bytes(b"no image")
    with pytest.raises(DataError, match=r"1 files were skipped \(cat/x.jpg: not a readable image"):
        load_image_folder(tmp_path)


def test_one_example_per_class_is_advised_to_add_examples_not_to_drop_classes(tmp_path):
    # Dropping every class with fewer than 2 examples would leave fewer than 2 classes: no advice.
    for rows in ("x,a\ny,b\n", "x,a\ny,b\nz,b\n", "x,a\ny,b\nz,c\nw,c\n"):
        path = tmp_path / "few.csv"
        path.write_text("text,label\n" + rows)
        with pytest.raises(DataError, match="add examples: at least 2 per class") as raised:
            require_evaluable(load_text_csv(path))
        assert "--drop-small-classes" not in str(raised.value)


def test_a_flat_folder_of_images_is_pointed_to_class_folders_and_label_from_name(tmp_path):
    _image(tmp_path / "cat_1.png", (10, 10, 10))
    _image(tmp_path / "dog_2.png", (90, 90, 90))
    with pytest.raises(DataError, match="not inside a class folder") as raised:
        load_image_folder(tmp_path)
    assert "--label-from-name" in str(raised.value) and "subfolder named for the class" in str(raised.value)
    # the option it names reads this folder
    assert load_image_folder(tmp_path, label_from_name=r"(.+)_\d+\.png$").classes == ["cat", "dog"]
    (tmp_path / "cat").mkdir()  # images only in class folders that are not usable: no such advice
    (tmp_path / "cat" / "x.jpg").write_bytes(b"no image")
    for image in tmp_path.glob("*.png"):
        image.unlink()
    with pytest.raises(DataError) as raised:
        load_image_folder(tmp_path)
    assert "--label-from-name" not in str(raised.value)


def test_shorten_and_as_inputs():
    from pathlib import Path

    from smalldata.data import as_inputs
    from smalldata.text_utils import shorten

    assert shorten("a" * 60) == "a" * 60 and shorten("a" * 61) == "a" * 57 + "..." and len(shorten("b" * 500)) == 60
    assert shorten("abcdefghij", 8) == "abcde..." and shorten(None) == "" and shorten(Path("x/y")) == "x/y"
    assert as_inputs(["a.png", Path("b.png")], "image") == [Path("a.png"), Path("b.png")]
    assert as_inputs(["hi", 3], "text") == ["hi", "3"]
