"""Joint dictionaries: registry, API shapes, own format, partition, diagnostics against float64 references, resume, bad input."""

from __future__ import annotations

import pytest
import torch
from test_dist import _torchrun, needs_torchrun, run_retrying_gloo_abort, worker_env

from universality import UniversalityError, sae
from universality._progress import set_quiet
from universality.sae.joint import diagnostics as dg
from universality.sae.joint import planted


@pytest.fixture(autouse=True)
def _quiet():
    set_quiet(True)
    yield
    set_quiet(False)


@pytest.fixture(scope="module")
def data():
    return planted.plant([12, 20], {(0, 1): 10, (0,): 4, (1,): 6}, n=2000, seed=3)


def test_joint_kinds_register_apart_from_single_model_kinds():
    assert set(sae.registered_kinds(joint=True)) == {"crosscoder", "crosscoder_l1", "usae", "partitioned"}
    assert not set(sae.registered_kinds()) & set(sae.registered_kinds(joint=True))
    with pytest.raises(UniversalityError, match="fit_joint"):
        sae.fit(torch.randn(100, 8), kind="crosscoder", n_latents=16, k=2)
    with pytest.raises(UniversalityError, match="single-model"):
        sae.fit_joint([torch.randn(50, 4), torch.randn(50, 4)], kind="topk")


@pytest.mark.parametrize("kind", ["crosscoder", "crosscoder_l1", "usae", "partitioned"])
def test_every_kind_trains_encodes_decodes_and_round_trips_its_format(kind, data, tmp_path):
    jd = sae.fit_joint(data.xs, kind=kind, n_latents=24, k=3, seed=0, batch_size=256, n_tokens=256 * 20, names=["a", "b"])
    z = jd.encode(data.xs)
    assert z.shape == (2000, 24) and (z >= 0).all()
    recon = jd.decode(z)
    assert [tuple(r.shape) for r in recon] == [(2000, 12), (2000, 20)]
    assert jd.decoder_norms.shape == (2, 24)
    labels = jd.classify()
    assert len(labels) == 24 and all(lb in ("shared", "dead", "unresolved") or (isinstance(lb, tuple) and set(lb) <= {"a", "b"}) for lb in labels)
    # raw-unit decode is the scaled reconstruction divided by each model's scale (float64 reference)
    xn = torch.cat([x.double() * s for x, s in zip(data.xs, jd.cfg.model_scales)], 1)
    ref = z.double() @ jd.coder.W_dec.detach().double() + jd.coder.b_dec.detach().double()
    torch.testing.assert_close(recon[1].double(), ref[:, 12:] / jd.cfg.model_scales[1], rtol=1e-4, atol=1e-4)
    assert xn.shape[1] == 32
    back = sae.load_joint(jd.save(tmp_path / kind))
    assert back.kind == kind and back.names == ["a", "b"]
    torch.testing.assert_close(back.encode(data.xs), z)
    torch.testing.assert_close(back.frequency, jd.frequency)
    assert back.classify() == labels


def test_partitioned_blocks_stay_exclusive(data):
    jd = sae.fit_joint(data.xs, kind="partitioned", n_latents=30, k=3, seed=0, batch_size=256, n_tokens=256 * 20, exclusive=[5, 7])
    W, E = jd.coder.W_dec.detach(), jd.coder.W_enc.detach()
    assert W[18:23, 12:].abs().max() == 0 and E[18:23, 12:].abs().max() == 0  # model 0's block writes and reads model 0 only
    assert W[23:30, :12].abs().max() == 0 and E[23:30, :12].abs().max() == 0
    labels = jd.classify()
    assert all(lb in (("model0",), "dead") for lb in labels[18:23])
    assert all(lb in (("model1",), "dead") for lb in labels[23:30])


def test_diagnostics_match_float64_references(data):
    jd = sae.fit_joint(data.xs, kind="crosscoder", n_latents=24, k=3, seed=0, batch_size=256, n_tokens=256 * 20)
    xn = torch.cat([x.double() * s for x, s in zip(data.xs, jd.cfg.model_scales)], 1)
    # cross-R²: the diagonal of a crosscoder read from one model alone, and the full row from every model
    r2 = dg.cross_r2(jd, data.xs)
    z0 = jd.encode(data.xs, source=0).double()
    err = xn - (z0 @ jd.coder.W_dec.detach().double() + jd.coder.b_dec.detach().double())
    var1 = (xn[:, 12:] - xn[:, 12:].mean(0)).pow(2).sum()
    assert abs(float(r2[0, 1]) - float(1 - err[:, 12:].pow(2).sum() / var1)) < 1e-4
    assert dg.off_diagonal_mean(r2) == pytest.approx(float((r2[0, 1] + r2[1, 0]) / 2))
    # shares sum to one per latent; the histogram counts every live latent once per model
    sh = dg.decoder_shares(jd)
    torch.testing.assert_close(sh.sum(0), torch.ones(24))
    h = dg.share_histogram(jd, bins=10)
    assert sum(h["counts"]["model0"]) == int((jd.frequency > 0).sum())
    # Latent Scaling: least-squares directions against a float64 lstsq of one latent
    ls = dg.latent_scaling(jd, data.xs)
    if ls.latents.numel():
        i = int(ls.latents[0])
        z = jd.encode(data.xs).double()
        f = z[:, i:i + 1]
        owner = [m for m in range(2) if bool(jd.carriers()[m, i])][0]
        other = 1 - owner
        sl_o, sl_x = (slice(0, 12), slice(12, 32)) if owner == 0 else (slice(12, 32), slice(0, 12))
        e = xn - (z @ jd.coder.W_dec.detach().double() + jd.coder.b_dec.detach().double())
        e = e - e.mean(0)
        v_own = torch.linalg.lstsq(f, e[:, sl_o] + f * jd.coder.W_dec.detach().double()[i, sl_o]).solution
        v_other = torch.linalg.lstsq(f, xn[:, sl_x] - xn[:, sl_x].mean(0)).solution
        assert float(ls.nu[0, other]) == pytest.approx(float(v_other.norm() / v_own.norm()), rel=1e-3)
    # Wilson interval: a textbook value (k=5, n=10 → 0.2366, 0.7634)
    lo, hi = dg.wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)


def test_agreement_with_mppc_counts_mutual_best_partners():
    # two "models" whose dictionaries are the planted codes themselves (permuted): every shared latent agrees
    g = torch.Generator().manual_seed(0)
    codes = (torch.rand(3000, 6, generator=g) < 0.2) * torch.rand(3000, 6, generator=g)
    pa, pb = torch.randperm(6, generator=g), torch.randperm(6, generator=g)
    labels = ["shared"] * 4 + [("a",), ("b",)]
    res = dg.agreement_with_mppc(codes, [codes[:, pa], codes[:, pb]], labels)
    assert res == {"agreement": 1.0, "n_shared": 4, "agreeing": 4}
    # break model b's dictionary for latent 0: its partner becomes a mixture that is nobody's mutual best
    cb = codes[:, pb].clone()
    j = int((pb == 0).nonzero())
    cb[:, j] = 0
    res = dg.agreement_with_mppc(codes, [codes[:, pa], cb], labels)
    assert res["agreeing"] == 3
    assert dg.mutual_fraction(codes, codes[:, pa]) == 1.0


class _FlakyStore:
    """A store-like source over a tensor that fails after ``fail_after`` reads (a crash mid-run)."""

    def __init__(self, x, fail_after=None):
        self.x, self.fail_after, self.reads = x, fail_after, 0
        self.n_rows = x.shape[0]

    def d(self, hook=None):
        return self.x.shape[1]

    def gather(self, rows, hook=None):
        self.reads += 1
        if self.fail_after is not None and self.reads > self.fail_after:
            raise RuntimeError("simulated crash")
        return self.x[rows].float()


def test_interrupted_run_resumes_to_the_uninterrupted_result(data, tmp_path):
    kw = dict(kind="usae", n_latents=24, k=3, seed=0, batch_size=200, n_tokens=200 * 30, checkpoint_every=5)
    full = sae.fit_joint([_FlakyStore(x) for x in data.xs], checkpoint_dir=str(tmp_path / "a"), **kw)
    with pytest.raises(RuntimeError, match="simulated crash"):
        sae.fit_joint([_FlakyStore(data.xs[0], fail_after=20), _FlakyStore(data.xs[1])], checkpoint_dir=str(tmp_path / "b"), **kw)
    assert (tmp_path / "b" / "checkpoint.json").is_file()
    resumed = sae.fit_joint([_FlakyStore(x) for x in data.xs], checkpoint_dir=str(tmp_path / "b"), **kw)
    for name, t in full.coder.state_dict().items():
        torch.testing.assert_close(resumed.coder.state_dict()[name], t, msg=name)


WORKER = r'''
import sys, torch
import torch.distributed as dist
from universality import sae
from universality.sae.joint import planted

dist.init_process_group("gloo")
t = planted.plant([8, 12], {(0, 1): 6, (0,): 3, (1,): 3}, n=1000, seed=2)
jd = sae.fit_joint(t.xs, kind="usae", sparsity="topk", n_latents=16, k=2, seed=0, batch_size=100, n_tokens=100 * 12, device="cpu")
if dist.get_rank() == 0:
    jd.save(sys.argv[1] + "/jd")
dist.barrier()
dist.destroy_process_group()
'''


@needs_torchrun
def test_two_gloo_processes_match_one_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = {}
    for n in (1, 2):
        folder = tmp_path / f"n{n}"
        folder.mkdir()
        run_retrying_gloo_abort([_torchrun(), "--standalone", f"--nproc_per_node={n}", str(script), str(folder)], worker_env(), [folder])
        out[n] = sae.load_joint(folder / "jd")
    for name, t in out[1].coder.state_dict().items():
        torch.testing.assert_close(out[2].coder.state_dict()[name], t, rtol=1e-4, atol=1e-5, msg=name)
    assert int(out[1].coder.steps) == 12


@pytest.mark.parametrize("xs,kw,match", [
    (lambda: [torch.randn(100, 4), torch.randn(90, 6)], {}, r"xs\[1\] has 90 aligned rows but xs\[0\] has 100"),
    (lambda: [torch.randn(100, 4), torch.randn(0, 6)], {}, r"xs\[1\] has no aligned rows"),
    (lambda: [torch.randn(100, 4), torch.randn(100, 6)], {"rows": [torch.arange(100), torch.arange(0)]}, r"xs\[1\] has no aligned rows"),
    (lambda: [torch.randn(100, 4)], {}, r"at least 2 models"),
    (lambda: torch.randn(100, 4), {}, r"give a list of aligned"),
    (lambda: [torch.randn(100, 4), torch.randn(100, 6)], {"kind": "partitioned", "n_latents": 10, "exclusive": [5, 5]},
     r"does not fit n_latents=10"),
    (lambda: [torch.randn(100, 4), torch.randn(100, 6).index_fill_(0, torch.tensor([7]), float("nan"))], {}, r"xs\[1\] contains NaN"),
    (lambda: [torch.randn(100, 4), "acts.pt"], {}, r"xs\[1\] is a str"),
])
def test_bad_input_is_one_sentence(xs, kw, match):
    args = dict(kind="crosscoder", n_latents=16, k=2, batch_size=50, n_tokens=100)
    args.update(kw)
    with pytest.raises(UniversalityError, match=match) as e:
        sae.fit_joint(xs(), **args)
    assert "\n" not in str(e.value)


def test_joint_initial_decoder_is_not_the_concatenation_of_same_seed_single_model_decoders():
    # Same seed, same widths: a joint row drawn from the single-model stream would equal the concatenation of rows
    # M*J .. M*J+M-1 of the per-model dictionaries (cosine 1); the joint kinds draw from their own stream.
    width, n_joint, m = 8, 16, 3
    single = sae.coder_class("topk")(sae.config_class("topk")(d_in=width, d_out=width, n_latents=n_joint * m, k=2, seed=5))
    for kind in sae.registered_kinds(joint=True):
        sparsity = {"k": 2} if "k" in sae.registry.kind_settings(kind) else {}
        cfg = sae.config_class(kind)(widths=[width] * m, n_latents=n_joint, seed=5, **sparsity)
        joint = sae.coder_class(kind)(cfg).W_dec.detach()
        for part in range(m):
            block = torch.nn.functional.normalize(joint[:, part * width:(part + 1) * width], dim=1)
            rows = torch.nn.functional.normalize(single.W_dec.detach()[part::m], dim=1)
            assert (block * rows).sum(1).abs().max() < 0.9, kind


@pytest.mark.parametrize("text,match", [("[1, 2]", r"holds a JSON list; a joint dictionary's joint.json must be a JSON object"),
                                        ("{bad", r"is not valid JSON \(.* at line 1\)")])
def test_a_damaged_joint_json_is_one_sentence(tmp_path, text, match):
    (tmp_path / "joint.json").write_text(text)
    with pytest.raises(UniversalityError, match=match):
        sae.load_joint(tmp_path)
