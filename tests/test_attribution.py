"""Attribution graphs on tiny random GPT-2, GPT-NeoX, Llama, Mamba, Mamba-2 and RWKV hosts with random dictionaries.

References: the host's own forward (the frozen replacement model reproduces its logits), a float64
forward with every source zeroed (each target = its incoming direct effects + that constant), and
interventions on the frozen model (zeroing a kept edge's source moves its target by the edge weight,
within circuit-tracer's tolerances).
"""

from __future__ import annotations

import pytest
import torch

import universality as uv
from attribution_hosts import ARCHS, random_dictionaries, tiny_model
from universality._errors import UniversalityError
from universality.analysis.attribution import ReplacementModel, attribution_graph

PROMPT = torch.randint(0, 97, (8,), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    out = {}
    for arch in ARCHS:
        path = tmp_path_factory.mktemp(arch)
        tiny_model(arch).save_pretrained(path)
        host = uv.load_host(str(path))
        out[arch] = (host, random_dictionaries(host, n_latents=32))
    return out


def _source_leaf(model: ReplacementModel, graph, node: int, sources):
    """The leaf entry of ``sources`` (row 0) that holds graph node ``node``'s value."""
    n = graph.node(node)
    if n.kind == "feature":
        sl = model.layer_slices()[n.layer]
        j = int(((model.active[sl, 1] == n.pos) & (model.active[sl, 2] == n.feature)).nonzero()[0, 0])
        return sources.codes[n.layer], (0, j)
    if n.kind == "error":
        return sources.errors[n.layer], (0, n.pos)
    return sources.embed, (0, n.pos)


def _target_value(model: ReplacementModel, graph, node: int, run) -> float:
    n = graph.node(node)
    if n.kind == "logit":
        return float(model.logits(run.final[:1], torch.tensor([n.feature]))[0, 0].detach())
    sl = model.layer_slices()[n.layer]
    j = int(((model.active[sl, 1] == n.pos) & (model.active[sl, 2] == n.feature)).nonzero()[0, 0])
    return float(model.preacts(run, torch.tensor([sl.start + j]))[0].detach())


@pytest.mark.parametrize("arch", ARCHS)
def test_targets_are_exactly_their_direct_effects_plus_constants(hosts, arch):
    host, dicts = hosts[arch]
    g = attribution_graph(host, PROMPT, dicts, dtype=torch.float64, batch_size=16)
    assert g.n_features > 20 and g.n_logits >= 1
    # the frozen replacement model with its error nodes reproduces the host's own logits
    assert g.frozen_logit_error < 1e-4
    # float64 reference: the same frozen model with every source zeroed gives each target's constant
    model = ReplacementModel(host, PROMPT, dicts, dtype=torch.float64)
    zero = model.forward(model.sources(1, zero=True))
    targets = list(range(g.n_features)) + [g.logit_index(k) for k in range(g.n_logits)]
    for node in targets:
        bias_only = _target_value(model, g, node, zero)
        total = float(g.adjacency[node].double().sum()) + bias_only
        assert total == pytest.approx(float(g.target_values[node]), abs=1e-5, rel=1e-6)
    # the adjacency is float32 but its constants were taken in float64: they agree with the zero-source forward
    for node in targets[:5] + targets[-1:]:
        assert float(g.constants[node]) == pytest.approx(_target_value(model, g, node, zero), abs=1e-5)
    # feature targets are the dictionaries' own pre-activations on the host's clean activations
    site = "mlp_in" if host.arch != "mamba" else "mixer_out"
    _, cache = host.run_with_cache(PROMPT[None], [f"blocks.{i}.{site}" for i in range(host.n_layers)])
    for node in range(0, g.n_features, 7):
        layer, pos, feat = g.features[node].tolist()
        coder = dicts[layer]
        x = cache[f"blocks.{layer}.{site}"][0, pos] * coder.cfg.input_scale
        if not coder.cfg.transcoder:
            x = x - coder.b_dec
        pre = float((x @ coder.W_enc[feat] + coder.b_enc[feat]).detach())
        assert float(g.target_values[node]) == pytest.approx(pre, abs=1e-4)
        code = coder.encode(cache[f"blocks.{layer}.{site}"][0, pos])[feat].detach()
        assert float(g.activations[node]) == pytest.approx(float(code), abs=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_kept_edge_equals_an_intervention(hosts, arch):
    host, dicts = hosts[arch]
    g = attribution_graph(host, PROMPT, dicts, batch_size=7)
    kept = g.prune()
    assert kept.edge_mask.any()
    # every kept edge (at most 12, largest first) and the 6 largest edges of the unpruned graph
    order = torch.argsort(g.adjacency.abs().flatten(), descending=True)
    kept_order = order[kept.edge_mask.flatten()[order]][:12]
    chosen = torch.cat([kept_order, order[:6]]).unique()
    n = g.n_nodes
    model = ReplacementModel(host, PROMPT, dicts)
    with torch.no_grad():
        clean_run = model.forward(model.sources(1))
    for d, s in zip((chosen // n).tolist(), (chosen % n).tolist()):
        sources = model.sources(1)
        leaf, at = _source_leaf(model, g, s, sources)
        with torch.no_grad():
            leaf[at] = 0
            changed = _target_value(model, g, d, model.forward(sources)) - _target_value(model, g, d, clean_run)
        weight = float(g.adjacency[d, s])
        if g.node(d).kind == "logit":
            assert -changed == pytest.approx(weight, abs=1e-5, rel=1e-3)
        else:
            assert -changed == pytest.approx(weight, abs=5e-4)


def test_batching_pruning_options_and_json(hosts):
    host, dicts = hosts["gpt2"]
    full = attribution_graph(host, PROMPT, dicts, batch_size=32)
    one = attribution_graph(host, PROMPT, dicts, batch_size=1)
    torch.testing.assert_close(one.adjacency, full.adjacency, atol=1e-5, rtol=1e-4)
    limited = attribution_graph(host, PROMPT, dicts, batch_size=8, max_feature_nodes=12)
    assert limited.n_features == 12
    # the kept features are the most influential ones of the full graph (ranked as circuit-tracer ranks them)
    top = set(torch.argsort(full.node_influence()[:full.n_features], descending=True)[:12].tolist())
    chosen = {full.feature_index(*f) for f in limited.features.tolist()}
    assert len(top & chosen) >= 8
    ha = attribution_graph(host, PROMPT, dicts, ha_threshold=0.05)
    assert 0 < ha.n_features < full.n_features
    assert float(ha.adjacency.abs()[ha.adjacency != 0].min()) >= 0.05
    doc = full.to_json()
    ids = [n["node_id"] for n in doc["nodes"]]
    assert len(ids) == len(set(ids))
    assert {ln["source"] for ln in doc["links"]} | {ln["target"] for ln in doc["links"]} <= set(ids)
    kinds = {n["feature_type"] for n in doc["nodes"]}
    assert {"embedding", "logit"} <= kinds
    kept = full.prune()
    linked = set((kept.edge_mask.any(0) | kept.edge_mask.any(1)).nonzero().flatten().tolist())
    want = sum(1 for i in range(full.n_features) if kept.node_mask[i] and i in linked)
    assert sum(n["feature_type"] == "cross layer transcoder" for n in doc["nodes"]) == want
    assert len(doc["links"]) == int(kept.edge_mask.sum())
    assert sum(n["feature_type"] == "embedding" for n in doc["nodes"]) == len(PROMPT)
    assert set(doc) == {"metadata", "qParams", "nodes", "links"} and doc["metadata"]["prompt_tokens"]
    rep, comp = full.scores()
    assert 0 < rep < 1 and 0 < comp < 1


def test_bad_inputs_are_one_sentence(hosts):
    host, dicts = hosts["gpt2"]
    with pytest.raises(UniversalityError, match="block 1 has no transcoder"):
        attribution_graph(host, PROMPT, {0: dicts[0]})
    with pytest.raises(UniversalityError, match="was trained on 'blocks.0.mlp_in'; it must read 'blocks.1.mlp_in'"):
        attribution_graph(host, PROMPT, [dicts[0], dicts[0]])
    other_host, other_dicts = hosts["gpt_neox"]
    with pytest.raises(UniversalityError, match="was trained on host .* not on this host"):
        attribution_graph(host, PROMPT, other_dicts)
    with pytest.raises(UniversalityError, match="target token 97 is outside the vocabulary 0..96"):
        attribution_graph(host, PROMPT, dicts, target=97)
    with pytest.raises(UniversalityError, match="the prompt is empty"):
        attribution_graph(host, torch.zeros(0, dtype=torch.long), dicts)
    with pytest.raises(UniversalityError, match="the prompt is empty"):
        attribution_graph(host, "", dicts)
    with pytest.raises(UniversalityError, match="prompt token 500 at position 1"):
        attribution_graph(host, [3, 500], dicts)
    with pytest.raises(UniversalityError, match="node_threshold is 1.5"):
        attribution_graph(host, PROMPT, dicts).prune(node_threshold=1.5)
