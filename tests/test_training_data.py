"""training_data.py: model.json's record of what training read survives the round trip, and folders
written before a field existed still load."""

from smalldata.data import Dataset, Skipped
from smalldata.training_data import TrainingData


def test_what_training_read_survives_model_json_and_says_what_was_offered():
    dataset = Dataset(["rain", "sun", "goal"], ["weather", "weather", "sport"], "text", source="topics.csv",
                      load_options={"text_column": "body"}, skipped=[Skipped("line 4", "empty text")])
    data = TrainingData.of(dataset, descriptions={"sport": "games"})
    saved = data.to_dict()
    assert saved["counts"] == {"sport": 1, "weather": 2} and saved["skipped"] == [{"what": "line 4", "reason": "empty text"}]
    assert "unlabeled" not in saved and saved["descriptions"] == {"sport": "games"}  # only what was offered
    assert TrainingData.from_dict(saved) == data
    assert data.n_unlabeled == 0


def test_a_folder_from_before_the_record_loads_with_defaults():
    old = TrainingData.from_dict({"counts": {"a": 3, "b": 2}})
    assert old.counts == {"a": 3, "b": 2} and old.skipped == [] and old.source == "" and old.descriptions is None
