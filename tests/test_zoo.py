"""The tiny zoo, on a tiny preset: ordinary HF checkpoints, recorded metrics, caching, resume, the induction probe."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

import universality as uv
from universality import UniversalityError
from universality.data import StreamConfig, corpus_from_texts, default_corpus, make_stream
from universality.zoo import PRESETS, ModelSpec, ensure_zoo, load_zoo_results, recall_by_period, zoo_paths
from universality.zoo import train as zoo_train
from universality.zoo.build import training_data


@pytest.fixture(scope="module")
def corpus():
    docs = sorted(default_corpus().documents, key=lambda d: len(d.text))[300:420]
    return corpus_from_texts([d.text for d in docs], name="zoo-test", heldout_percent=20)


def _preset(**kw):
    members = (ModelSpec("transformer", "gpt_neox", 0, True), ModelSpec("transformer-untrained", "gpt_neox", 0, False))
    # bf16 on: the Transformer trains under bfloat16 autocast, as in the default preset
    return dataclasses.replace(PRESETS["test"], **{"steps": 12, "checkpoint_every": 4, "bf16": True, "models": members, **kw})


@pytest.fixture(scope="module")
def built(tmp_path_factory, corpus):
    home = tmp_path_factory.mktemp("home")
    paths = ensure_zoo(_preset(), home=home, corpus=corpus, workers=1)
    return home, paths


def test_members_are_ordinary_hf_checkpoints_with_true_metrics(built, corpus):
    from transformers import AutoModelForCausalLM

    home, paths = built
    assert set(paths) == {"transformer", "transformer-untrained"}
    results = load_zoo_results(_preset(), home=home)
    host = uv.load_host(paths["transformer"], device="cpu")
    assert host.arch == "transformer" and host.tokenizer is not None
    hf = AutoModelForCausalLM.from_pretrained(paths["transformer"]).eval()
    p = _preset()
    held = make_stream(corpus, host.tokenizer, StreamConfig(seq_len=p.seq_len, n_sequences=p.eval_sequences, split="heldout"))
    with torch.no_grad():
        logits = hf(held.tokens).logits.double()
    per = F.cross_entropy(logits[:, :-1].transpose(1, 2), held.tokens[:, 1:], reduction="none")
    m = held.mask[:, 1:].double()
    ref_loss = float((per * m).sum() / m.sum())
    info = results["models"]["transformer"]
    assert info["heldout_loss"] == pytest.approx(ref_loss, abs=2e-3)
    assert info["n_params"] == sum(q.numel() for q in hf.parameters())
    base = results["models"]["transformer-untrained"]
    assert base["steps"] == 0 and info["steps"] == p.copy_warmup_steps + p.steps
    # the preset allows bf16; the machine's precision probe decides, and the member records the outcome
    from universality.precision import bf16_pays

    assert info["precision"] == ("bfloat16-autocast" if bf16_pays() else "float32") and base["precision"] is None
    assert info["heldout_loss"] < base["heldout_loss"] - 0.2  # training did something
    assert 0 < info["unigram_loss"] < torch.log(torch.tensor(float(len(host.tokenizer)))).item()
    assert results["tokenizer_fingerprint"] == uv.data.tokenizer_fingerprint(host.tokenizer)
    assert results["corpus"]["fingerprint"] == corpus.fingerprint
    assert json.loads((paths["transformer"] / "zoo_model.json").read_text())["heldout_loss"] == info["heldout_loss"]
    # training_data hands out the material the build evaluated on: the same metrics come back from it
    again = zoo_train.evaluate(host, training_data(p, host.tokenizer, corpus))
    assert again.heldout_loss == pytest.approx(info["heldout_loss"], abs=1e-4)
    assert again.induction_score == pytest.approx(info["induction_score"], abs=1e-3)


def test_second_call_reuses_the_build(built, corpus):
    home, paths = built
    stamp = {n: (p / "model.safetensors").stat().st_mtime_ns for n, p in paths.items()}
    again = ensure_zoo(_preset(), home=home, corpus=corpus)
    assert again == paths
    assert {n: (p / "model.safetensors").stat().st_mtime_ns for n, p in again.items()} == stamp
    assert zoo_paths(_preset(), home=home) == paths


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, corpus, built, monkeypatch):
    from safetensors.torch import load_file

    _, ref_paths = built
    real = zoo_train.make_batch
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 11:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(zoo_train, "make_batch", flaky)
    with pytest.raises(KeyboardInterrupt):
        ensure_zoo(_preset(), home=tmp_path, corpus=corpus, only=["transformer"], workers=1)
    work = tmp_path / "zoo" / "test" / ".work" / "transformer"
    # 4 copy warm-up steps, then make_batch: its 11th call is step 14, the last checkpoint before it step 12
    assert json.loads((work / "ckpt.json").read_text())["step"] == 12
    monkeypatch.setattr(zoo_train, "make_batch", real)
    paths = ensure_zoo(_preset(), home=tmp_path, corpus=corpus, only=["transformer"], workers=1)
    got = load_file(str(paths["transformer"] / "model.safetensors"))
    want = load_file(str(ref_paths["transformer"] / "model.safetensors"))
    assert got.keys() == want.keys()
    for k in want:
        assert torch.allclose(got[k], want[k], atol=1e-6, rtol=0), k


class _CopyHost:
    """Planted ground truth: predicts the token that followed the same position one period earlier."""

    def __init__(self, vocab: int, period: int):
        self.model = torch.nn.Linear(1, 1)
        self.device = torch.device("cpu")
        self.vocab, self.period = vocab, period

    def run_with_hooks(self, tokens, hooks):
        b, t = tokens.shape
        logits = torch.zeros(b, t, self.vocab)
        for pos in range(self.period - 1, t):
            logits[torch.arange(b), pos, tokens[:, pos + 1 - self.period]] = 30.0
        return logits


def test_induction_probe_on_a_planted_copier():
    V, L = 50, 8
    gen = torch.Generator().manual_seed(0)
    rand = torch.randint(2, V, (6, L), generator=gen)
    pool = torch.randint(0, V, (1000,), generator=gen)
    held = torch.randint(2, V, (4, 2 * L), generator=gen)
    data = zoo_train.TrainData(pool, held, torch.ones_like(held, dtype=torch.bool), torch.cat([rand, rand], 1), V, 2)
    ev = zoo_train.evaluate(_CopyHost(V, L), data)
    assert ev.induction_accuracy == 1.0
    assert ev.induction_second < 1e-6
    assert ev.induction_first == pytest.approx(float(torch.log(torch.tensor(float(V)))), abs=1e-4)
    assert ev.induction_score > 3.0
    counts = torch.bincount(pool, minlength=V).double() + 1
    ref_uni = float(-(counts / counts.sum()).log()[held[:, 1:].reshape(-1)].mean())
    assert ev.unigram_loss == pytest.approx(ref_uni, abs=1e-9)


def test_a_copier_recalls_its_own_period_and_its_divisors_after_one_lag():
    V, n_special = 60, 2
    got = recall_by_period(_CopyHost(V, 8), n_special, V - n_special, (4, 8), rows=16, seq_len=32)
    assert [r.period for r in got] == [4, 8]
    p4, p8 = got
    assert p8.top1 == 1.0 and p8.loss < 1e-6
    # period 4: targets at positions 4..31 (28); the lag-8 copier is uniform for targets 4..7 and exact afterwards
    assert p4.top1 == pytest.approx(24 / 28, abs=1e-6)
    assert p4.loss == pytest.approx(4 / 28 * math.log(V), abs=1e-4)


def test_a_copier_with_the_wrong_lag_is_at_chance():
    V, n_special = 500, 2
    (r,) = recall_by_period(_CopyHost(V, 5), n_special, V - n_special, (8,), rows=64, seq_len=32)
    assert r.top1 < 0.05  # only chance coincidences of random tokens five apart
    assert r.loss > 20.0   # confidently wrong: the 30-logit lands on another token


@pytest.mark.parametrize("kwargs, needle", [({"periods": (0,)}, "recall period 0"), ({"periods": (32,)}, "recall period 32"),
                                            ({"periods": (True,)}, "recall period True"), ({"n_ids": 0}, "n_ids 0"),
                                            ({"rows": 0}, "rows 0"), ({"seq_len": 1}, "seq_len 1")])
def test_bad_periods_and_ids_are_one_sentence(kwargs, needle):
    args = {"periods": (4,), "n_ids": 10, **kwargs}
    n_ids, periods = args.pop("n_ids"), args.pop("periods")
    with pytest.raises(UniversalityError, match=needle.replace("(", r"\(")):
        recall_by_period(_CopyHost(20, 4), 2, n_ids, periods, **args)


def test_repeated_rows_are_mixed_into_batches():
    p = dataclasses.replace(PRESETS["test"], repeat_fraction=0.5, batch_size=64)
    pool = torch.arange(10_000) % 300 + 2
    data = zoo_train.TrainData(pool, pool[:64].view(2, 32), torch.ones(2, 32, dtype=torch.bool), pool[:64].view(2, 32), 320, 2)
    batch = zoo_train.make_batch(data, p, torch.Generator().manual_seed(0))
    periodic = 0
    for row in batch:
        if any(torch.equal(row[L:], row[:-L]) for L in range(4, p.seq_len // 2 + 1)):
            periodic += 1
    assert 16 <= periodic <= 48  # about half, the rest are plain (aperiodic) windows of the pool


def test_copy_warmup_batches_are_tiled_random_segments():
    p = dataclasses.replace(PRESETS["test"], copy_warmup_seq_len=16, copy_warmup_batch=256)
    pool = torch.arange(1000) % 300 + 2
    data = zoo_train.TrainData(pool, pool[:64].view(2, 32), torch.ones(2, 32, dtype=torch.bool), pool[:64].view(2, 32), 320, 2)
    batch = zoo_train.make_copy_batch(data, p, torch.Generator().manual_seed(0))
    assert batch.shape == (256, 16) and int(batch.min()) >= 2 and int(batch.max()) < 320
    periods = [next((L for L in range(1, 9) if torch.equal(row[L:], row[:-L])), None) for row in batch]
    assert all(pd is not None and 4 <= pd <= 8 for pd in periods)  # each row tiles one segment of 4..8 tokens
    assert set(periods) == {4, 5, 6, 7, 8}


def test_copy_curriculum_grows_its_id_range_per_architecture():
    """A per-architecture curriculum draws from its first ``start_ids`` ids, then doubles the range up to the
    vocabulary; other architectures keep the preset's shared warm-up, whose batches are unchanged."""
    from universality.zoo import CopyCurriculum
    from universality.zoo.presets import ZooPreset

    cur = CopyCurriculum(steps=40, seq_len=32, batch=64, start_ids=8, hold=10, double_every=5)
    p = dataclasses.replace(PRESETS["test"], copy_warmup_by_arch=(("mamba", cur),))
    pool = torch.arange(1000) % 300 + 2
    data = zoo_train.TrainData(pool, pool[:64].view(2, 32), torch.ones(2, 32, dtype=torch.bool), pool[:64].view(2, 32), 320, 2)
    spans = {}
    for step in (0, 9, 10, 14, 15, 39):
        b = zoo_train.make_copy_batch(data, p, torch.Generator().manual_seed(step), "mamba", step)
        assert b.shape == (64, 32) and int(b.min()) >= 2
        spans[step] = int(b.max()) - 2 + 1
    assert spans[0] <= 8 and spans[9] <= 8 and 8 < spans[10] <= 16 and spans[14] <= 16 and 16 < spans[15] <= 32
    assert spans[39] > 160  # capped at the 318 non-special ids
    assert cur.ids_at(10 ** 6, 318) == 318
    # the Transformer keeps the shared warm-up, draw for draw
    old = zoo_train.make_copy_batch(data, PRESETS["test"], torch.Generator().manual_seed(1))
    assert torch.equal(zoo_train.make_copy_batch(data, p, torch.Generator().manual_seed(1), "gpt_neox"), old)
    assert zoo_train.copy_warmup_steps(p, "mamba") == 40 and zoo_train.copy_warmup_steps(p, "gpt_neox") == 4
    assert zoo_train.tokens_per_member(p, "mamba") == 40 * 64 * 32 + p.steps * p.batch_size * p.seq_len
    # presets without a curriculum keep their fingerprint input; a JSON round trip (build workers) rebuilds it
    assert "copy_warmup_by_arch" not in PRESETS["default"].as_dict()
    d = json.loads(json.dumps(p.as_dict()))
    d["models"] = tuple(ModelSpec(**m) for m in d["models"])
    assert ZooPreset(**d).curriculum("mamba") == cur
    with pytest.raises(UniversalityError, match="copy_warmup_by_arch"):
        dataclasses.replace(PRESETS["test"], copy_warmup_by_arch=(("lstm", cur),))
    with pytest.raises(UniversalityError, match="exceeds"):
        dataclasses.replace(PRESETS["test"], copy_warmup_by_arch=(("mamba", dataclasses.replace(cur, seq_len=64)),))
    with pytest.raises(UniversalityError, match="double_every"):
        CopyCurriculum(steps=10, double_every=0)


def test_copy_warmup_goes_to_the_listed_architectures_only(built):
    home, _ = built
    models = load_zoo_results(_preset(), home=home)["models"]
    p = _preset()
    t = models["transformer"]
    assert t["copy_warmup_steps"] == p.copy_warmup_steps == 4 and t["steps"] == 4 + p.steps
    assert t["tokens_seen"] == 4 * p.copy_warmup_batch * p.copy_warmup_seq_len + p.steps * p.batch_size * p.seq_len
    assert models["transformer-untrained"]["copy_warmup_steps"] == 0
    q = dataclasses.replace(p, copy_warmup_archs=("mamba",))
    assert zoo_train.copy_warmup_steps(q, "gpt_neox") == 0 and zoo_train.copy_warmup_steps(q, "mamba") == 4
    r = dataclasses.replace(p, steps=100, copy_warmup_steps=50)
    lrs = [zoo_train._lr(s, r, 50) for s in range(150)]
    assert lrs[0] < lrs[29] == lrs[49] == r.lr  # copy phase: 30-step ramp, then the peak
    assert lrs[50] < lrs[54] == r.lr > lrs[149] >= 0.1 * r.lr  # the language phase has its own ramp and decay


def test_bad_names():
    with pytest.raises(UniversalityError, match="preset 'huge'"):
        ensure_zoo("huge")
    with pytest.raises(UniversalityError, match="not in preset"):
        ensure_zoo("test", only=["gpt5"])
    with pytest.raises(UniversalityError, match="architecture"):
        ModelSpec("x", "lstm")
    with pytest.raises(UniversalityError, match="copy_warmup_archs"):
        dataclasses.replace(PRESETS["test"], copy_warmup_archs=("lstm",))
    with pytest.raises(UniversalityError, match="copy_warmup_seq_len"):
        dataclasses.replace(PRESETS["test"], copy_warmup_seq_len=4)


@pytest.mark.parametrize("arch", ["gpt_neox", "mamba", "mamba2"])
def test_zoo_models_start_from_fan_in_scaled_weights(arch):
    """Embeddings and normal-initialised projections have std 1/sqrt(d_model) (not transformers' 0.02 / 0.1)."""
    from universality.zoo.models import init_model

    p = PRESETS["default"]
    model = init_model(arch, p, 2048, 0, 1, seed=0)
    want = p.d_model ** -0.5
    emb = model.get_input_embeddings().weight
    assert abs(float(emb.detach().std()) / want - 1) < 0.02
    proj = next(w for n, w in model.named_parameters() if n.endswith(("query_key_value.weight", "in_proj.weight")))
    assert abs(float(proj.detach().std()) / want - 1) < 0.02


def test_state_size_by_arch_sets_the_ssm_state_and_leaves_other_presets_alone():
    """A preset's per-architecture state size reaches the HF model's A matrix and B/C projections; presets
    without one keep their fingerprint input; a bad entry is one clear error."""
    from universality.zoo.models import init_model

    p = dataclasses.replace(PRESETS["test"], state_size_by_arch=(("mamba", 24), ("mamba2", 40)))
    m1 = init_model("mamba", p, 320, 0, 1, seed=0)
    mixer = m1.backbone.layers[0].mixer
    assert m1.config.state_size == 24 and mixer.A_log.shape == (2 * p.d_model, 24)
    assert mixer.x_proj.out_features == mixer.time_step_rank + 2 * 24  # dt, B and C of the larger state
    m2 = init_model("mamba2", p, 320, 0, 1, seed=0)
    assert m2.config.state_size == 40
    assert init_model("mamba", PRESETS["test"], 320, 0, 1, seed=0).config.state_size == 16  # defaults unchanged
    assert "state_size_by_arch" not in PRESETS["default"].as_dict()
    assert dict(PRESETS["circuits"].state_size_by_arch).get("mamba2") == 64
    with pytest.raises(UniversalityError, match="state_size_by_arch"):
        dataclasses.replace(PRESETS["test"], state_size_by_arch=(("gpt_neox", 8),))
    with pytest.raises(UniversalityError, match="state_size_by_arch"):
        dataclasses.replace(PRESETS["test"], state_size_by_arch=(("mamba", 0),))


def test_rwkv_channels_and_recall_prior_reach_the_model():
    """``state_size_by_arch`` sets RWKV-4's WKV channels; ``rwkv_recall_init`` gives every block's time mix the recall
    prior, checked on the host's own hooks: a key never sees its own token, block 0's value and receptance never see
    the previous one; decays keep a token 32 steps back; receptance starts as the key over the gain."""
    from universality.hosts.registry import host_class
    from universality.zoo.models import RECALL_KEY_GAIN, init_model

    p = dataclasses.replace(PRESETS["test"], state_size_by_arch=(("rwkv", 48),), rwkv_recall_init=True)
    model = init_model("rwkv", p, 320, 0, 1, seed=0)
    assert model.config.attention_hidden_size == 48 and model.rwkv.blocks[1].attention.key.weight.shape == (48, p.d_model)
    plain = init_model("rwkv", PRESETS["test"], 320, 0, 1, seed=0)
    assert plain.config.attention_hidden_size == p.d_model  # defaults unchanged
    assert float(plain.get_input_embeddings().weight.detach().std()) < 1e-3  # transformers' own RWKV-4 start
    assert abs(float(model.get_input_embeddings().weight.detach().std()) * p.d_model ** 0.5 - 1) < 0.05
    for block in model.rwkv.blocks:
        att = block.attention
        per_step = torch.exp(-torch.exp(att.time_decay.detach()))
        assert float(per_step.min()) > 0.94 and float(per_step.max()) < 1.0 and float(per_step.min() ** 32) > 0.1
        torch.testing.assert_close(att.key.weight, RECALL_KEY_GAIN * att.receptance.weight)

    host = host_class("rwkv")(model.eval(), None, name_or_path="prior")
    names = ["blocks.0.att.k", "blocks.0.att.v", "blocks.0.att.r", "blocks.1.att.k"]
    tokens = torch.randint(2, 320, (1, 8), generator=torch.Generator().manual_seed(0))
    last_changed, prev_changed = tokens.clone(), tokens.clone()
    last_changed[0, -1] = (tokens[0, -1] + 1 - 2) % 318 + 2
    prev_changed[0, -2] = (tokens[0, -2] + 1 - 2) % 318 + 2
    base, new_last, new_prev = (host.run_with_cache(t, names)[1] for t in (tokens, last_changed, prev_changed))
    for name in ("blocks.0.att.k", "blocks.1.att.k"):  # the key at the last position reads only earlier tokens
        torch.testing.assert_close(new_last[name][0, -1], base[name][0, -1])
        assert not torch.allclose(new_prev[name][0, -1], base[name][0, -1])
    for name in ("blocks.0.att.v", "blocks.0.att.r"):  # value and receptance read only the current token
        torch.testing.assert_close(new_prev[name][0, -1], base[name][0, -1])
        assert not torch.allclose(new_last[name][0, -1], base[name][0, -1])
    assert "rwkv_recall_init" not in PRESETS["default"].as_dict() and PRESETS["circuits"].rwkv_recall_init


def test_the_parallel_build_starts_the_costliest_member_first():
    """Member cost is training tokens times the step cost, and RWKV-4's grows with its WKV channels: the circuits
    preset's wide RWKV goes first; with as many channels as its width it would go last."""
    from universality.zoo.build import member_cost

    circuits = PRESETS["circuits"]
    order = sorted(("gpt_neox", "mamba", "mamba2", "rwkv"), key=lambda a: -member_cost(circuits, a))
    assert order[0] == "rwkv"
    narrow = dataclasses.replace(circuits, state_size_by_arch=(), rwkv_recall_init=False)
    assert member_cost(narrow, "rwkv") < min(member_cost(narrow, a) for a in ("gpt_neox", "mamba", "mamba2"))
    tokens = zoo_train.tokens_per_member(circuits, "rwkv")
    assert member_cost(circuits, "rwkv") == pytest.approx(tokens * (1 + (circuits.state_size("rwkv", 64) / 64 - 1) / 6))
