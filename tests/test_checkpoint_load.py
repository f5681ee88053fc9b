"""Loading float checkpoints: each tensor goes straight into the model's own parameter (peak memory ~1x the
file), with every check of the checked reader kept (header, truncation, dtypes, finiteness)."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from minigpt.errors import MiniGPTError
from minigpt.model import GPT, GPTConfig
from minigpt.model.checkpoint import open_pretrained, read_pretrained
from minigpt.model.folders import load_model
from minigpt.nn import uninitialized

ROOT = Path(__file__).resolve().parents[1]


def random_model(cfg, seed=0):
    """A model with random weights, quicker than its own initialisation (same sizes)."""
    rng = np.random.default_rng(seed)
    with uninitialized():
        model = GPT(cfg)
    for p in model.parameters():
        p.data[...] = rng.standard_normal(p.shape, dtype=np.float32) * 0.02
    return model


def digests(model) -> dict:
    return {n: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() for n, a in model.state_dict().items()}


CHILD = r"""
import hashlib, json, sys
import numpy as np
from minigpt.model import GPT

def kb(field):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":"))

base = kb("VmRSS")
try:
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak to the current RSS (Linux >= 4.0)
        f.write("5")
except OSError:
    base = kb("VmHWM")
model = GPT.from_pretrained(sys.argv[1])
peak = (kb("VmHWM") - base) * 1024
print(json.dumps({"peak": peak, "digests": {n: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
                                            for n, a in model.state_dict().items()}}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc/self/status (VmHWM)")
@pytest.mark.parametrize("tie", [True, False])
def test_loading_a_float32_checkpoint_needs_about_the_files_size(tmp_path, tie):
    """A ~150 MB checkpoint loads with a peak of < 1.3x the file added (reading it whole and then copying
    it into the model needed ~2x), and the loaded weights are the saved ones, bit for bit."""
    cfg = GPTConfig(vocab_size=4096 if tie else 2048, context_length=256, emb_dim=512, n_layers=12, n_heads=8,
                    drop_rate=0.0, tie_weights=tie)
    model = random_model(cfg)
    if not tie:  # an untied head equal to the embedding: the loader compares the two before building the model
        model.out_head.data[...] = model.tok_emb.weight.data
    model.save_pretrained(tmp_path / "m")
    want = digests(model)
    del model
    size = (tmp_path / "m" / "model.safetensors").stat().st_size
    assert 100 << 20 < size < 200 << 20
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "m")], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    if not tie:  # stored twice but equal: loaded as a tied head
        want.pop("out_head")
    assert got["digests"] == want
    assert got["peak"] < 1.3 * size, f"loading added {got['peak'] / 2**20:.0f} MB for a {size / 2**20:.0f} MB file"


def test_run_folder_and_load_model_read_into_the_parameters(tmp_path):
    cfg = GPTConfig.preset("nano", vocab_size=80, context_length=16)
    model = random_model(cfg)
    ck = tmp_path / "run" / "checkpoints" / "step-000003"
    model.save_pretrained(ck)
    for f in ("optimizer.safetensors", "trainer_state.json"):
        (ck / f).write_text("{}")
    (tmp_path / "run" / "latest.json").write_text(json.dumps({"checkpoint": "checkpoints/step-000003"}))
    for back in (GPT.from_pretrained(tmp_path / "run"), load_model(tmp_path / "run")):
        assert digests(back) == digests(model)
    cfg2, state = read_pretrained(tmp_path / "run")
    assert cfg2 == cfg and set(state) == set(model.state_dict())
    assert all(np.array_equal(state[n], a) for n, a in model.state_dict().items())


def test_hugging_face_layout_float16_lm_head_stored_twice_and_zero_qkv_bias(tmp_path):
    """GPT-2 names without the ``transformer.`` prefix, float16 tensors cast as they are read, the causal-mask
    buffers ignored, an lm_head equal to wte loaded as a tied head, zero q/k/v biases under a config without
    them dropped."""
    cfg = GPTConfig.preset("nano", vocab_size=80, context_length=16, qkv_bias=False)
    model = random_model(cfg)
    (tmp_path / "hf").mkdir()
    model.save_pretrained(tmp_path / "hf")
    t = load_file(str(tmp_path / "hf" / "model.safetensors"))
    t = {k.removeprefix("transformer."): v.astype(np.float16) for k, v in t.items()}
    t["lm_head.weight"] = t["wte.weight"].copy()
    t["h.0.attn.bias"] = np.ones((1, 1, 16, 16), dtype=np.float32)
    save_file(t, str(tmp_path / "hf" / "model.safetensors"))
    back = GPT.from_pretrained(tmp_path / "hf")
    assert back.config.tie_weights and not back.config.qkv_bias and back.out_head is None
    for n, a in model.state_dict().items():
        assert back.state_dict()[n].dtype == np.float32
        assert np.array_equal(back.state_dict()[n], a.astype(np.float16).astype(np.float32)), n
    # a head that differs in its last element only is a separate head (compared a chunk at a time)
    t["lm_head.weight"][-1, -1] += 1
    save_file(t, str(tmp_path / "hf" / "model.safetensors"))
    with open_pretrained(tmp_path / "hf") as pf:
        assert pf.tensors.equal("wte.weight", "wte.weight", chunk=7)
        assert not pf.tensors.equal("lm_head.weight", "wte.weight", chunk=7)
        assert not pf.config.tie_weights
    back = GPT.from_pretrained(tmp_path / "hf")
    assert not back.config.tie_weights and back.out_head.data[-1, -1] == np.float32(t["lm_head.weight"][-1, -1])


@pytest.fixture
def saved(tmp_path):
    model = random_model(GPTConfig.preset("nano", vocab_size=80, context_length=16, tie_weights=False))
    model.save_pretrained(tmp_path / "m")
    return tmp_path / "m"


@pytest.mark.parametrize("load", [GPT.from_pretrained, load_model])
def test_a_nan_in_any_tensor_names_that_tensor(saved, load):
    w = saved / "model.safetensors"
    t = load_file(str(w))
    for name in ("transformer.h.1.mlp.c_proj.weight", "lm_head.weight"):
        bad = dict(t)
        bad[name] = bad[name].copy()
        bad[name].flat[-1] = np.inf
        save_file(bad, str(w))
        with pytest.raises(MiniGPTError, match=rf"model.safetensors: tensor {name} holds NaN or infinity"):
            load(saved)


@pytest.mark.parametrize("cut", [1, 1000, 10**9])
def test_a_truncated_file_is_a_clear_error(saved, cut):
    w = saved / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: max(len(data) - cut, 3)])
    for load in (GPT.from_pretrained, load_model):
        with pytest.raises(MiniGPTError, match=r"cannot read .*model.safetensors"):
            load(saved)


@pytest.mark.parametrize("raw", [b"", b"not a safetensors file at all", (10**12).to_bytes(8, "little") + b"{}",
                                 (20).to_bytes(8, "little") + b'{"a": {"dtype": "F32"'])
def test_a_hostile_header_is_a_clear_error(saved, raw):
    (saved / "model.safetensors").write_bytes(raw)
    with pytest.raises(MiniGPTError, match=r"cannot read .*model.safetensors"):
        GPT.from_pretrained(saved)


def test_the_reader_checks_the_data_offsets_itself(saved):
    """Beside safetensors' validation of the header, the reader checks each tensor's offsets against the shape
    and dtype it was given and against the file's size."""
    import minigpt.model.checkpoint as ck

    w = saved / "model.safetensors"
    header = ck._read_header(w)
    ck._TensorFile(w, header).close()
    name = "transformer.wpe.weight"
    (rows, cols), dtype = header[name]
    for lie in (((rows + 1, cols), dtype), ((rows, cols), "F64")):
        with pytest.raises(MiniGPTError, match=rf"cannot read .*: tensor {name} has data offsets"):
            ck._TensorFile(w, {**header, name: lie})
