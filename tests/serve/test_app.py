"""The HTTP API in process (FastAPI's TestClient): answers, metadata, and the bad-request battery: each bad request
gets a 4xx with a one-line JSON error, and the next good request is answered as usual."""

import base64
import json

import pytest
import torch

from convmixer.errors import ConfigError
from convmixer.serve import TOKEN_ENV, ServedModel, create_app, token_from_env

from .helpers import CLASSES, encode, png_declaring, require_serve_extra, test_client

require_serve_extra()

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def client(served):
    with test_client(create_app(served, max_batch=8, max_wait_ms=2, top_k=3, max_body_bytes=64 * 1024)) as c:
        yield c


def post_image(client, data: bytes, content_type: str = "image/png", **kw):
    return client.post("/predict", content=data, headers={"content-type": content_type, **kw.pop("headers", {})},
                       **kw)


def assert_one_line_error(response, status: int, words: str = "") -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and "\n" not in body["error"] and body["error"]
    assert words.lower() in body["error"].lower(), body["error"]
    return body["error"]


def assert_same_top(a: list[dict], b: list[dict]) -> None:
    """The same classes in the same order, the same probabilities up to float rounding (batches of other sizes)."""
    assert [t["index"] for t in a] == [t["index"] for t in b]
    assert [t["probability"] for t in a] == pytest.approx([t["probability"] for t in b], abs=1e-5)


def assert_serves(client) -> None:
    response = post_image(client, encode(seed=7))
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


def test_raw_image_gives_top_k_classes_with_probabilities(client, served):
    data = encode((40, 30))
    response = post_image(client, data)
    assert response.status_code == 200
    (prediction,) = response.json()["predictions"]
    assert prediction["image"] == "upload" and len(prediction["top"]) == 3
    probabilities = [t["probability"] for t in prediction["top"]]
    assert probabilities == sorted(probabilities, reverse=True) and all(0 <= p <= 1 for p in probabilities)
    # the same answer as running the library's preprocessing and model directly
    logits = served.predict([served.preprocess(data, "x")])
    expected = logits.softmax(1).topk(3)
    assert [t["index"] for t in prediction["top"]] == expected.indices[0].tolist()
    assert [t["class"] for t in prediction["top"]] == [CLASSES[i] for i in expected.indices[0].tolist()]
    assert probabilities == pytest.approx(expected.values[0].tolist(), abs=1e-6)


def test_multipart_files_are_one_batch_in_order_and_top_k_is_per_request(client):
    images = [encode(seed=i) for i in range(3)]
    files = [("images", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    response = client.post("/predict?top_k=2", files=files)
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert [p["image"] for p in predictions] == ["0.png", "1.png", "2.png"]
    assert all(len(p["top"]) == 2 for p in predictions)
    for data, prediction in zip(images, predictions):  # each file's answer is its own
        alone = post_image(client, data, params={"top_k": 2}).json()["predictions"][0]["top"]
        assert_same_top(alone, prediction["top"])


def test_json_base64_images_and_rgb_jpeg_input(client):
    images = [encode(seed=1), encode((64, 48), mode="RGB", fmt="JPEG")]  # a colour JPEG becomes 8-bit L
    body = {"images": [base64.b64encode(d).decode() for d in images], "top_k": 10}
    response = client.post("/predict", json=body)
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert [p["image"] for p in predictions] == ["images[0]", "images[1]"]
    assert all(len(p["top"]) == 10 for p in predictions)
    single = client.post("/predict", json={"image": body["images"][0]}).json()["predictions"]
    assert_same_top(single[0]["top"], predictions[0]["top"][:3])  # the server's default top_k


def test_health_ready_metadata_and_stats(client, served):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"ready": True, "model": "convmixer_fmnist", "backend": "torch"}
    meta = client.get("/metadata").json()
    assert meta["model"] == "convmixer_fmnist" and meta["backend"] == "torch"
    assert meta["classes"] == CLASSES and meta["num_classes"] == 10
    assert meta["channels"] == 1 and meta["input_size"] == [1, 28, 28]
    assert meta["parameters"] == served.parameters > 0
    pre = meta["preprocessing"]
    assert pre["mean"] == pytest.approx([0.2860]) and pre["std"] == pytest.approx([0.3530])
    assert "28x28" in pre["resize"] and pre["crop_pct"] == 1.0
    assert meta["server"]["max_batch"] == 8 and meta["server"]["auth"] == "none"
    stats = client.get("/stats").json()
    assert stats["images"] >= stats["batches"] and stats["pending"] == 0 and stats["failed_batches"] == 0


BAD_REQUESTS = {
    # name: (body, content type, status, words in the error)
    "non-image bytes": (b"this is not an image at all", "image/png", 400, "not an image"),
    "truncated JPEG": (encode((64, 64), "RGB", "JPEG")[:2000], "image/jpeg", 400, "truncated"),
    "truncated PNG": (encode((64, 64))[:-40], "image/png", 400, "upload"),
    "empty body": (b"", "image/png", 400, "empty"),
    "oversized body": (b"\0" * (64 * 1024 + 1), "image/png", 413, "limit"),
    "huge declared image": (png_declaring(6000, 6000), "image/png", 413, "6000x6000"),
    "decompression bomb": (png_declaring(100_000, 100_000), "image/png", 413, "decompression"),
    "wrong content type": (encode(), "text/plain", 415, "content type"),
    "no content type": (encode(), "", 415, "content type"),
    "malformed JSON": (b'{"images": [', "application/json", 400, "malformed JSON"),
    "JSON without images": (b'{"picture": "x"}', "application/json", 400, "images"),
    "JSON with bad base64": (b'{"image": "%%% not base64"}', "application/json", 400, "base64"),
    "JSON base64 of non-image": (json.dumps({"image": base64.b64encode(b"hello").decode()}).encode(),
                                 "application/json", 400, "not an image"),
    "malformed multipart": (b"--nope\r\ngarbage", "multipart/form-data; boundary=xyz", 400, "multipart"),
    "multipart without files": (b'--xyz\r\nContent-Disposition: form-data; name="note"\r\n\r\nhi\r\n--xyz--\r\n',
                                "multipart/form-data; boundary=xyz", 400, "no image"),
    "multipart without boundary": (b"whatever", "multipart/form-data", 400, "multipart"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_a_one_line_4xx_and_the_server_keeps_serving(client, case):
    body, content_type, status, words = BAD_REQUESTS[case]
    assert_one_line_error(post_image(client, body, content_type), status, words)
    assert_serves(client)


def test_oversized_body_without_content_length_is_refused_while_streaming(client):
    def chunks():
        for _ in range(20):
            yield b"\0" * 8192

    assert_one_line_error(client.post("/predict", content=chunks(), headers={"content-type": "image/png"}), 413)
    assert_serves(client)


def test_bad_top_k_unknown_paths_and_methods(client):
    for k in ("0", "-1", "two", "1.5"):
        assert_one_line_error(post_image(client, encode(), params={"top_k": k}), 400, "top_k")
    assert_one_line_error(client.post("/predict", json={"image": base64.b64encode(encode()).decode(),
                                                        "top_k": True}), 400, "top_k")
    assert_one_line_error(client.get("/nowhere"), 404)
    assert_one_line_error(client.get("/predict"), 405)
    assert_serves(client)


def test_bad_image_in_a_batch_names_it(client):
    files = [("a", ("good.png", encode(), "image/png")), ("b", ("bad.png", b"junk", "image/png"))]
    assert_one_line_error(client.post("/predict", files=files), 400, "bad.png")


def test_bearer_token_guards_predict_metadata_and_stats(served):
    with test_client(create_app(served, token=TOKEN)) as c:
        for path, call in [("/predict", lambda **kw: post_image(c, encode(), **kw)),
                           ("/metadata", lambda **kw: c.get("/metadata", **kw)),
                           ("/stats", lambda **kw: c.get("/stats", **kw))]:
            missing = call()
            assert_one_line_error(missing, 401, "token")
            assert missing.headers["www-authenticate"] == "Bearer"
            for wrong in ("Bearer nope", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, "Bearer"):
                assert_one_line_error(call(headers={"authorization": wrong}), 401, "token")
            assert call(headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200, path
        assert c.get("/health").status_code == 200 and c.get("/ready").status_code == 200  # probes stay open


def test_token_from_environment(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert token_from_env() is None
    monkeypatch.setenv(TOKEN_ENV, f" {TOKEN}\n")
    assert token_from_env() == TOKEN
    monkeypatch.setenv(TOKEN_ENV, "  ")
    with pytest.raises(ConfigError, match=TOKEN_ENV):
        token_from_env()


def test_a_failing_model_is_a_500_and_the_next_batch_runs(served):
    calls = []

    def flaky(images: torch.Tensor) -> torch.Tensor:
        calls.append(len(images))
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return served.run(images)

    model = ServedModel("torch", flaky, served.metadata, served.parameters, "test")
    with test_client(create_app(model)) as c:
        assert "out of memory" not in assert_one_line_error(post_image(c, encode()), 500, "model failed")
        assert_serves(c)
        assert c.get("/stats").json()["failed_batches"] == 1


def test_ready_is_503_outside_the_lifespan(served):
    app = create_app(served)
    c = test_client(app)  # no `with`: the lifespan (and so the batcher) never started
    response = c.get("/ready")
    assert response.status_code == 503 and response.json()["ready"] is False
    assert_one_line_error(post_image(c, encode()), 503, "shutting down")
