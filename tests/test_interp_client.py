"""The chat client against a real loopback HTTP server speaking the OpenAI wire format."""

from __future__ import annotations

import json
import re
import time

import pytest

pytest.importorskip("httpx", reason="the chat client needs httpx (pip install universality[interp])")

from interp_helpers import free_port, planted_activations, table  # noqa: E402
from universality._errors import UniversalityError  # noqa: E402
from universality.interp import ChatClient, ClientConfig, explain_dictionary  # noqa: E402
from universality.interp.delphi_format import read_explanations  # noqa: E402
from universality.interp.loopback import LoopbackEndpoint  # noqa: E402

CHAT = [{"role": "user", "content": "hello"}]


def client(ep, tmp_path=None, **kw):
    cfg = dict(base_url=ep.url if ep else "http://127.0.0.1:9/v1", model="loopback-model", backoff=0.01, max_retries=3,
               timeout=2.0, api_key_env="UNIV_TEST_KEY")
    cfg.update(kw)
    return ChatClient(ClientConfig(**cfg), cache_dir=None if tmp_path is None else tmp_path / "cache")


@pytest.mark.parametrize("fault", ["429", "500", "malformed", "no_choices", "drop", "timeout"])
def test_each_fault_is_retried(fault):
    with LoopbackEndpoint(reply=lambda m: "fine", slow_s=1.0) as ep:
        ep.faults = [fault]
        with client(ep, timeout=0.4) as c:
            assert c.complete(CHAT) == "fine"
        assert ep.n_chat == 2


def test_unreadable_replies_are_retried_then_failed_not_cached(tmp_path):
    def parse(s):
        if s == "???":
            raise ValueError("not a list")
        return s

    with LoopbackEndpoint(reply=lambda m: "good") as ep:
        ep.faults = ["unreadable"]
        with client(ep, tmp_path) as c:
            assert c.complete(CHAT, parse) == "good"
        ep.faults = ["unreadable"] * 10
        with client(ep, tmp_path) as c:
            assert c.complete([{"role": "user", "content": "other"}], parse) is None
            assert c.n_requests == 4  # first try + 3 retries
        assert not any("???" in p.read_text() for p in (tmp_path / "cache").rglob("*.json"))


def test_concurrent_and_cached_replies_survive_the_server(tmp_path):
    chats = [[{"role": "user", "content": f"q{i}"}] for i in range(16)]
    with LoopbackEndpoint(reply=lambda m: m[-1]["content"].upper(), latency_s=0.2) as ep:
        with client(ep, tmp_path, concurrency=8) as c:
            t0 = time.perf_counter()
            out = c.complete_many(chats)
            wall = time.perf_counter() - t0
        assert out == [f"Q{i}" for i in range(16)]
        assert ep.max_in_flight >= 4 and wall < 16 * 0.2 / 2
    # the server is gone: every reply comes from the on-disk cache
    with client(None, tmp_path, base_url=ep.url) as c:
        assert c.complete_many(chats) == out and c.n_requests == 0 and c.n_cached == 16


def test_unreachable_endpoint_is_one_sentence():
    c = client(None, base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=1)
    with pytest.raises(UniversalityError, match="cannot be reached"):
        c.check()
    with pytest.raises(UniversalityError, match=r"failed 2 tries \(last: cannot connect"):
        c.complete(CHAT)


def test_wrong_model_name_is_one_sentence():
    with LoopbackEndpoint(models=("served-a", "served-b")) as ep:
        with pytest.raises(UniversalityError, match="does not serve model 'loopback-model'; it lists served-a, served-b"):
            client(ep).check()
        with pytest.raises(UniversalityError, match="does not serve model 'loopback-model'"):
            client(ep).complete(CHAT)
        assert ep.n_chat == 1  # not retried


def test_api_key_from_environment_never_on_disk(tmp_path, monkeypatch):
    monkeypatch.delenv("UNIV_TEST_KEY", raising=False)
    with pytest.raises(UniversalityError, match=r"\$UNIV_TEST_KEY is not set"):
        client(None, require_key=True)
    secret = "sk-test-" + "7" * 24
    with LoopbackEndpoint(api_key=secret, reply=lambda m: "authorised") as ep:
        with pytest.raises(UniversalityError, match=r"answered 401 \(no API key was sent\); set \$UNIV_TEST_KEY"):
            client(ep).complete(CHAT)
        monkeypatch.setenv("UNIV_TEST_KEY", secret)
        c = client(ep, tmp_path)
        assert c.complete(CHAT) == "authorised"
        assert ep.auth[-1] == f"Bearer {secret}"
        assert secret not in repr(c) and secret not in json.dumps(c.cfg.__dict__)
        monkeypatch.setenv("UNIV_TEST_KEY", "wrong")
        with pytest.raises(UniversalityError, match="the API key was refused"):
            client(ep).complete([{"role": "user", "content": "x"}])
    files = list((tmp_path / "cache").rglob("*"))
    assert files and not any(secret in f.read_text() for f in files if f.is_file())


def _judge_reply(messages):
    """A language model stand-in: explains with the highlighted tokens, judges by looking for them."""
    user, system = messages[-1]["content"], messages[0]["content"]
    if "[EXPLANATION]" in system:
        toks = sorted(set(re.findall(r"<<(.*?)>>", user)))
        return "Thinking...\n[EXPLANATION]: " + "; ".join(json.dumps(t) for t in toks)
    expl = re.search(r"Explanation: (.*)\n", user).group(1)
    words = [json.loads(w) for w in re.findall(r'"(?:[^"\\]|\\.)*"', expl)]
    lines = [ln for ln in user.splitlines() if ln.startswith("Example ")]
    if "highlighted" in system:
        return json.dumps([int(all(h in words for h in re.findall(r"<<(.*?)>>", ln)) and "<<" in ln) for ln in lines])
    return json.dumps([int(any(re.search(re.escape(w) + r"(?!\d)", ln.split(": ", 1)[1]) for w in words)) for ln in lines])


def test_llm_pipeline_end_to_end_with_faults_and_resume(tmp_path):
    acts = planted_activations(n_random=2)
    with LoopbackEndpoint(reply=_judge_reply) as ep:
        ep.faults = ["429", "drop", "malformed", "unreadable"]
        with client(ep, tmp_path, concurrency=4) as c:
            res = explain_dictionary(acts, table(), module="toy.llm", out=tmp_path / "out", latents=[2, 4], client=c)
        n_first = ep.n_chat
        assert res.explainer == "llm:loopback-model"
        assert res.latents[2].scores["detection"]["balanced_accuracy"] >= 0.9
        assert read_explanations(tmp_path / "out", "toy.llm")[2] == res.latents[2].explanation
        with client(ep, tmp_path) as c:  # rerun: explanations kept, every reply cached
            again = explain_dictionary(acts, table(), module="toy.llm", out=tmp_path / "out", latents=[2, 4], client=c)
            assert c.n_requests == 0
        assert ep.n_chat == n_first
        assert {j: r.scores for j, r in again.latents.items()} == {j: r.scores for j, r in res.latents.items()}


def test_explanations_of_another_explainer_are_not_reused(tmp_path):
    acts = planted_activations(n_random=1)
    explain_dictionary(acts, table(), module="toy.mix", out=tmp_path / "out", latents=[2])  # offline first
    with LoopbackEndpoint(reply=_judge_reply) as ep:
        with client(ep, tmp_path) as c:
            res = explain_dictionary(acts, table(), module="toy.mix", out=tmp_path / "out", latents=[2], client=c)
    assert not res.latents[2].explanation.startswith("Token statistics")
    assert read_explanations(tmp_path / "out", "toy.mix")[2] == res.latents[2].explanation
