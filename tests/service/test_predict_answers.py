"""The service's answers: `unknown` under the request's threshold or the model's floor, the
probabilities still given; a class named `unknown` refused; uneven classes flagged."""

import io


def test_a_threshold_in_the_request_answers_unknown_and_keeps_the_probabilities(service, text_project):
    predict = f"/api/projects/{text_project['id']}/predict/texts"
    sure = service.post(predict, json={"texts": ["Heavy snow is forecast tonight."], "unknown": False})
    assert sure.status_code == 200, sure.text
    assert sure.json()["cut_off"] == 0.0 and sure.json()["predictions"][0]["label"] == "weather"
    unsure = service.post(predict, json={"texts": ["Heavy snow is forecast tonight."], "threshold": 1.0}).json()
    assert unsure["cut_off"] == 1.0
    assert unsure["predictions"][0]["label"] == "unknown" and len(unsure["predictions"][0]["probabilities"]) == 3
    assert unsure["predictions"][0]["unknown_because"] == "below threshold"
    default = service.post(predict, json={"texts": ["Heavy snow is forecast tonight."]}).json()
    assert default["cut_off"] == 0.0 and 0 < default["familiarity_floor"] < 1  # the model's floor, on by default
    assert 0 <= default["predictions"][0]["familiarity"] <= 1
    assert sure.json()["familiarity_floor"] is None  # the floor off


def test_a_threshold_outside_zero_to_one_is_refused(service, text_project):
    predict = f"/api/projects/{text_project['id']}/predict/texts"
    refused = service.post(predict, json={"texts": ["rain"], "threshold": 1.5})
    assert refused.status_code == 422 and "threshold" in refused.text


def test_images_take_the_threshold_as_a_query_parameter(service, fashion_pngs):
    project = service.post("/api/projects", json={"name": "clothes", "modality": "image"}).json()
    for label, images in fashion_pngs.items():
        files = [("files", (f"{label}{i}.png", io.BytesIO(data), "image/png")) for i, data in enumerate(images[:8])]
        assert service.post(f"/api/projects/{project['id']}/examples/images", data={"label": label}, files=files).status_code == 201
    job = service.post(f"/api/projects/{project['id']}/jobs").json()
    assert service.wait(job["id"], report=False)["state"] == "succeeded"
    label, images = next(iter(fashion_pngs.items()))
    predict = f"/api/projects/{project['id']}/predict/images"
    files = [("files", ("x.png", io.BytesIO(images[-1]), "image/png"))]
    answered = service.post(predict + "?threshold=0&unknown=false", files=files).json()
    assert answered["predictions"][0]["label"] == label
    files = [("files", ("x.png", io.BytesIO(images[-1]), "image/png"))]
    assert service.post(predict + "?threshold=1", files=files).json()["predictions"][0]["label"] == "unknown"
    assert service.post(predict + "?threshold=-1", files=files).status_code == 422


def test_a_class_named_unknown_is_refused_and_nothing_is_stored(service):
    project = service.post("/api/projects", json={"name": "named unknown", "modality": "text"}).json()
    body = {"examples": [{"text": "a text", "label": "unknown"}]}
    refused = service.post(f"/api/projects/{project['id']}/examples/texts", json=body)
    assert refused.status_code == 422 and "name the class otherwise" in refused.text
    assert service.client.get(f"/api/projects/{project['id']}").json()["n_examples"] == 0


def test_a_class_far_behind_the_others_is_flagged(service):
    project = service.post("/api/projects", json={"name": "uneven", "modality": "text"}).json()
    examples = [{"text": f"big class text number {i}", "label": "big"} for i in range(10)]
    examples += [{"text": f"small class text number {i}", "label": "small"} for i in range(3)]
    assert service.post(f"/api/projects/{project['id']}/examples/texts", json={"examples": examples}).status_code == 201
    problems = service.client.get(f"/api/projects/{project['id']}").json()["problems"]
    assert any("'small' far behind 'big'" in problem and "balanced accuracy" in problem for problem in problems)
