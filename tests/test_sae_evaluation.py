"""Evaluations: every metric against an independent float64 computation that splices through HF's own modules;
probing against planted ground truth; labels against hand-checked spans; SAEBench's JSON shape."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_transformer

from universality import UniversalityError, load_host, sae
from universality.data.bpe import train_byte_bpe
from universality.sae.code_labels import CLASSES, char_classes, labelled_windows
from universality.sae.probing import sparse_probing

SOURCE = '''"""Module docstring."""
import os  # a comment


def f(x):
    """Function docstring."""
    return "literal" + str(x)
'''


def test_char_classes_match_hand_spans():
    cls = char_classes(SOURCE)
    at = lambda s, k=0: int(cls[SOURCE.index(s) + k])  # noqa: E731
    assert CLASSES[at('"""Module')] == "docstring" and CLASSES[at("docstring.", 3)] == "docstring"
    assert CLASSES[at("# a comment")] == "comment" and CLASSES[at("comment")] == "comment"
    assert CLASSES[at('"""Function')] == "docstring"
    assert CLASSES[at('"literal"')] == "string" and CLASSES[at("literal")] == "string"
    assert CLASSES[at("import")] == "code" and CLASSES[at("return")] == "code" and CLASSES[at("str(x)")] == "code"
    assert cls[SOURCE.index(" os")] == -1  # whitespace is unlabelled
    assert char_classes("def (:\n") is None


def test_labelled_windows_give_each_token_its_class():
    tok = train_byte_bpe([SOURCE * 3], vocab_size=600)
    lt = labelled_windows([SOURCE] * 6, tok, seq_len=16, n_windows=8)
    assert lt.tokens.shape == lt.labels.shape == (8, 16)
    want = {"#": "comment", "import": "code", "literal": "string", "Function": "docstring", "Module": "docstring", "return": "code"}
    checked = set()
    for ids, labs in zip(lt.tokens.tolist(), lt.labels.tolist()):
        for i, lab in zip(ids, labs):
            piece = tok.decode([i]).strip()
            for word, cls in want.items():
                if piece.startswith(word):
                    assert CLASSES[lab] == cls, (piece, CLASSES[lab])
                    checked.add(word)
            if not piece:
                assert lab == -1
    assert len(checked) >= 4 and set(lt.labels.unique().tolist()) <= {-1, 0, 1, 2, 3}
    with pytest.raises(UniversalityError, match="give only"):
        labelled_windows([SOURCE], tok, seq_len=16, n_windows=50)


def test_probe_fit_reaches_scipys_optimum():
    from scipy.optimize import minimize

    from universality.sae.probing import fit_logistic, logistic_loss

    g = torch.Generator().manual_seed(3)
    a = torch.randn(300, 12, generator=g).double()
    y = (a[:, 0] + 0.5 * a[:, 1] + torch.randn(300, generator=g).double() > 0)
    ours = fit_logistic(a, y, l2=1e-3, max_iter=200)
    ref = minimize(lambda p: (lambda r: (r[0], r[1].numpy()))(logistic_loss(a, y.double(), torch.from_numpy(p), 1e-3)),
                   torch.zeros(13, dtype=torch.float64).numpy(), jac=True, method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-15})
    assert logistic_loss(a, y.double(), ours, 1e-3)[0] == pytest.approx(ref.fun, abs=1e-8)
    torch.testing.assert_close(ours, torch.from_numpy(ref.x), rtol=1e-3, atol=1e-4)


def test_probing_recovers_a_planted_latent():
    g = torch.Generator().manual_seed(0)
    n = 1200
    labels = torch.randint(0, 2, (n,), generator=g)
    window = torch.arange(n) // 10
    acts = torch.randn(n, 8, generator=g)  # uninformative activations
    codes = torch.rand(n, 40, generator=g)
    codes[:, 17] = labels.float() * 2 + 0.3 * torch.rand(n, generator=g)  # latent 17 is the class
    res = sparse_probing(acts, codes, labels, window, ("zero", "one"), ks=(1, 2))
    one = next(r for r in res if r.task == "one")
    assert one.sae_top_k[1] > 0.97 and one.sae_test_accuracy > 0.95
    assert 0.35 < one.llm_test_accuracy < 0.65 and 0.35 < one.llm_top_k[1] < 0.65
    acts[:, 3] += labels.float() * 3  # now the activations know it too
    assert sparse_probing(acts, codes, labels, window, ("zero", "one"), ks=(1,))[1].llm_top_k[1] > 0.9


@pytest.fixture
def gpt2_host(save_model):
    model = tiny_transformer("gpt2")
    return model, load_host(save_model(model), device="cpu")


def _coder(seed=0):
    coder = sae.build_coder(sae.CoderConfig(kind="topk", d_in=32, n_latents=64, k=6, seed=seed, hook="blocks.1.resid_post"))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        coder.b_dec.copy_(torch.randn(32, generator=g) * 0.1)
        coder.W_dec.mul_(1.5)
    return coder


def test_core_metrics_equal_a_float64_reference_spliced_through_hf(gpt2_host):
    model, host = gpt2_host
    coder = _coder()
    tokens = torch.randint(1, 97, (6, 12), generator=torch.Generator().manual_seed(1))
    ev = sae.evaluate(coder, host, tokens=tokens, batch_size=4)
    assert isinstance(ev, sae.Evaluation) and ev.core.n_tokens == 6 * 12
    # independent reference: HF's own block 1 output, HF's own forward with a hook on that block
    block = model.transformer.h[1]
    grabbed = {}

    def grab(m, a, out):
        grabbed["x"] = out[0] if isinstance(out, tuple) else out

    def replace_with(fn):
        def hook(m, a, out):
            t = out[0] if isinstance(out, tuple) else out
            new = fn(t)
            return (new,) + tuple(out[1:]) if isinstance(out, tuple) else new
        return hook

    with torch.no_grad():
        h = block.register_forward_hook(grab)
        clean = model(tokens).logits.double()
        h.remove()
        x = grabbed["x"].double()
        recon = coder(grabbed["x"]).double()
        codes = coder.encode(grabbed["x"]).double()
        h = block.register_forward_hook(replace_with(lambda t: coder(t)))
        spliced = model(tokens).logits.double()
        h.remove()
        h = block.register_forward_hook(replace_with(torch.zeros_like))
        ablated = model(tokens).logits.double()
        h.remove()
    y, r = x.reshape(-1, 32), recon.reshape(-1, 32)
    fvu = ((y - r) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()
    ce = lambda lg: F.cross_entropy(lg[:, :-1].reshape(-1, 97), tokens[:, 1:].reshape(-1)).item()  # noqa: E731
    kl = lambda lg: (clean.softmax(-1) * (clean.log_softmax(-1) - lg.log_softmax(-1))).sum(-1).mean().item()  # noqa: E731
    c = ev.core
    close = lambda a, b, tol=1e-5: abs(a - b) <= tol * max(1.0, abs(b))  # noqa: E731
    assert close(c.fvu, float(fvu)) and close(c.explained_variance, 1 - float(fvu))
    assert close(c.l0, float((codes != 0).sum(-1).double().mean())) and c.l0 == 6
    assert close(c.l1, float(codes.sum(-1).mean()))
    assert close(c.mse, float(((y - r) ** 2).mean()))
    assert close(c.cossim, float(F.cosine_similarity(y, r, dim=1).mean()))
    assert close(c.l2_ratio, float((r.norm(dim=1) / y.norm(dim=1)).mean()))
    assert close(c.relative_reconstruction_bias, float((r.norm(dim=1) ** 2).mean() / (y * r).sum(1).mean()))
    assert close(c.ce_loss_without_sae, ce(clean)) and close(c.ce_loss_with_sae, ce(spliced)) and close(c.ce_loss_with_ablation, ce(ablated))
    assert close(c.ce_loss_score, (ce(ablated) - ce(spliced)) / (ce(ablated) - ce(clean)), 1e-4)
    assert close(c.kl_div_with_sae, kl(spliced)) and close(c.kl_div_with_ablation, kl(ablated))
    freq = (codes.reshape(-1, 64) != 0).double().mean(0)
    assert close(c.dead_fraction, float((freq == 0).double().mean())) and close(c.dense_fraction, float((freq > 0.1).double().mean()))
    assert sum(ev.density.counts) + ev.density.n_dead == 64
    assert c.ce_loss_with_ablation > c.ce_loss_without_sae


def test_skip_bos_leaves_position_zero_out_and_unpatched(gpt2_host):
    _, host = gpt2_host
    coder = _coder(1)
    tokens = torch.randint(1, 97, (4, 10), generator=torch.Generator().manual_seed(2))
    ev = sae.evaluate_host(coder, host, tokens, skip_bos=True)
    assert ev.core.n_tokens == 4 * 9 and ev.config["skip_bos"]
    with torch.no_grad():
        _, cache = host.run_with_cache(tokens, names=["blocks.1.resid_post"])
        x = cache["blocks.1.resid_post"][:, 1:].reshape(-1, 32).double()
        r = coder(x.float()).double()
    assert abs(ev.core.fvu - float(((x - r) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())) < 1e-6


def test_probing_and_saebench_json_on_labelled_code(gpt2_host, tmp_path):
    _, host = gpt2_host
    tok = train_byte_bpe([SOURCE * 4], vocab_size=300)
    lt = labelled_windows([SOURCE] * 20, tok, seq_len=12, n_windows=20)
    tokens = lt.tokens % 97  # the tiny model's vocabulary; labels stay exact per position
    ev = sae.evaluate_host(_coder(2), host, tokens, labels=lt.labels, classes=lt.classes, probe_max_per_class=60)
    assert {p.task for p in ev.probing} <= set(CLASSES) and ev.probing
    for p in ev.probing:
        assert 0 <= p.sae_test_accuracy <= 1 and set(p.sae_top_k) <= {1, 2, 5, 10, 20, 50}
    out = ev.to_saebench(sae_cfg={"d_sae": 64})
    core, probing = out["core"], out["sparse_probing"]
    assert core["eval_type_id"] == "core" and probing["eval_type_id"] == "sparse_probing"
    for key in ("model_behavior_preservation", "model_performance_preservation", "reconstruction_quality", "shrinkage", "sparsity",
                "token_stats", "misc_metrics"):
        assert key in core["eval_result_metrics"]
    assert core["eval_result_metrics"]["model_performance_preservation"]["ce_loss_score"] == ev.core.ce_loss_score
    assert len(core["eval_result_details"]) == 64 and "llm_top_1_test_accuracy" in probing["eval_result_metrics"]["llm"]
    json.dumps(out)
    assert sae.Evaluation.from_dict(json.loads(json.dumps(ev.to_dict()))) == ev


def test_bad_evaluation_input(gpt2_host):
    _, host = gpt2_host
    coder = _coder()
    with pytest.raises(UniversalityError, match="give a LongTensor"):
        sae.evaluate_host(coder, host, torch.zeros(3, 1, dtype=torch.long))
    with pytest.raises(UniversalityError, match="needs tokens="):
        sae.evaluate(coder, host)
    coder.cfg.hook = None
    with pytest.raises(UniversalityError, match="names no hook point"):
        sae.evaluate_host(coder, host, torch.zeros(2, 4, dtype=torch.long))
