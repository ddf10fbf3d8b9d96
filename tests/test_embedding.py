"""The MiniLM embedder: one model run gives the embedding and the pooled layers the harm prior reads."""

import subprocess
import sys

import numpy as np

from guard.embedding import DIM, LAYER_DIM, model_path, shared_embedder


def test_layers_end_with_the_embedding_and_each_part_is_unit_length():
    emb = shared_embedder()
    texts = ["How do I reset my router?", "Write a limerick about a cat who hates Mondays."]
    rows = emb.layers(texts)
    assert rows.shape == (2, LAYER_DIM)
    assert np.array_equal(rows[:, -DIM:], emb.embed(texts))
    norms = np.linalg.norm(rows.reshape(2, 4, DIM), axis=2)
    assert np.allclose(norms, 1.0, atol=1e-5)
    # the lower layers are not copies of the last: they carry something the embedding does not
    assert float(rows[0, :DIM] @ rows[0, -DIM:]) < 0.95


def test_a_long_text_gives_one_layers_row_per_window():
    emb = shared_embedder()
    text = " ".join(["The committee met on Tuesday to discuss the budget for the new library."] * 40)
    rows = emb.layers_windows(text)
    assert rows.shape[1] == LAYER_DIM and len(rows) > 1
    assert np.array_equal(rows[:, -DIM:], emb.embed_windows(text))


def test_a_model_without_the_layer_outputs_is_a_clear_configuration_error(tmp_path):
    # the packaged model as published exposes only its last layer: the judge must say so, not crash later
    code = ("from guard.embedding import MiniLMEmbedder\n"
            "from guard.errors import ConfigError\n"
            "try:\n    MiniLMEmbedder().embed(['hello'])\n"
            "except ConfigError as e:\n    print('ConfigError:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"GUARD_EMBEDDING_MODEL": str(model_path()), "PATH": "/usr/bin:/bin",
                              "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert "ConfigError:" in out.stdout and "layers the harm prior reads" in out.stdout


def test_the_conversion_exposes_the_layers_and_keeps_the_embedding(tmp_path):
    dst = tmp_path / "m.onnx"
    subprocess.run([sys.executable, "-m", "guard.embedding_convert", str(model_path()), str(dst)], check=True,
                   capture_output=True, timeout=300)
    import onnxruntime as ort

    names = [o.name for o in ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).get_outputs()]
    assert names[0] == "last_hidden_state" and {"layer_norm_6", "layer_norm_8", "layer_norm_10"} <= set(names)



def test_the_temporary_fallback_folder_is_private_and_refused_when_others_can_write_to_it(tmp_path, monkeypatch):
    import tempfile

    from guard import embedding

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    folder = embedding._private_temp()
    assert folder is not None and folder.parent == tmp_path and (folder.stat().st_mode & 0o777) == 0o700
    folder.chmod(0o777)  # someone else could have planted a model here
    assert embedding._private_temp() is None
