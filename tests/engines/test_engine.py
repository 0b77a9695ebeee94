"""The in-process transformers engine: determinism, batching invariance, exact log-probabilities."""

from __future__ import annotations

import pytest
import torch

from humpback.core.config import EngineConfig
from humpback.engines import EngineCapabilityError, GenerationRequest, make_engine
from humpback.engines.transformers_engine import TransformersEngine

PROMPTS = [
    "Hi",
    "Tell me about whales and why they sing in the deep ocean at night.",
    "One two three",
    "A much longer prompt " * 12,
    "Short",
    "Explain photosynthesis to a child in a few sentences please.",
    "x " * 40,
]


def _raw(prompts, **kw):
    return [GenerationRequest(prompt=p, **kw) for p in prompts]


def test_sampling_is_deterministic_under_a_seed(tiny_engine):
    reqs = _raw(PROMPTS[:3], temperature=1.0, top_p=0.9, max_tokens=12, seed=123, n=2)
    a = tiny_engine.generate(reqs)
    b = tiny_engine.generate(reqs)
    assert [r.texts for r in a] == [r.texts for r in b]
    c = tiny_engine.generate(_raw(PROMPTS[:3], temperature=1.0, top_p=0.9, max_tokens=12, seed=124, n=2))
    assert [r.texts for r in a] != [r.texts for r in c]
    # the n samples of one request differ from each other (independent generators)
    assert any(r.texts[0] != r.texts[1] for r in a)


def test_batched_greedy_equals_one_by_one(tiny_model_dir):
    # batch_size 3 over 7 prompts forces refills, cache merges and left-trims.
    batched = TransformersEngine(tiny_model_dir, EngineConfig(dtype="float32", batch_size=3, progress=False))
    single = TransformersEngine(tiny_model_dir, EngineConfig(dtype="float32", batch_size=1, progress=False))
    lens = [5, 17, 9, 30, 3, 11, 22]
    reqs = [GenerationRequest(prompt=p, temperature=0.0, max_tokens=n) for p, n in zip(PROMPTS, lens)]
    out_b = batched.generate(reqs)
    out_s = single.generate(reqs)
    assert [r.texts for r in out_b] == [r.texts for r in out_s]
    assert [r.completion_tokens for r in out_b] == [r.completion_tokens for r in out_s]


def test_batched_sampling_equals_one_by_one(tiny_model_dir):
    batched = TransformersEngine(tiny_model_dir, EngineConfig(dtype="float32", batch_size=4, progress=False))
    single = TransformersEngine(tiny_model_dir, EngineConfig(dtype="float32", batch_size=1, progress=False))
    reqs = _raw(PROMPTS, temperature=0.8, top_p=0.95, top_k=50, max_tokens=10, seed=7)
    assert [r.texts for r in batched.generate(reqs)] == [r.texts for r in single.generate(reqs)]


def test_shared_prompt_prefill_equals_one_by_one(tiny_model_dir):
    # n samples of a request are prefilled once and their KV rows repeated: greedy, each of the n copies must
    # equal the request run alone with n=1
    batched = TransformersEngine(tiny_model_dir, EngineConfig(dtype="float32", batch_size=8, progress=False))
    single = TransformersEngine(tiny_model_dir, EngineConfig(dtype="float32", batch_size=1, progress=False))
    out_b = batched.generate(_raw(PROMPTS[:3], temperature=0.0, max_tokens=12, n=3))
    out_s = single.generate(_raw(PROMPTS[:3], temperature=0.0, max_tokens=12, n=1))
    assert [r.texts for r in out_b] == [r.texts * 3 for r in out_s]


def test_greedy_matches_hf_generate(tiny_engine):
    tok, model = tiny_engine.tokenizer, tiny_engine.model
    prompt = PROMPTS[1]
    ids = torch.tensor([tiny_engine.encode(prompt)])
    ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=15, do_sample=False,
                         eos_token_id=tiny_engine.eos_ids, pad_token_id=tiny_engine.pad_id)
    ref_tokens = [t for t in ref[0, ids.shape[1]:].tolist() if t not in tiny_engine.eos_ids]
    [res] = tiny_engine.generate(_raw([prompt], temperature=0.0, max_tokens=15))
    assert res.text == tok.decode(ref_tokens, skip_special_tokens=True)


def test_max_tokens_and_finish_reason(tiny_engine):
    [res] = tiny_engine.generate(_raw(["hello"], temperature=0.0, max_tokens=4))
    assert res.completion_tokens == [4] and res.finish_reasons == ["length"]
    assert res.prompt_tokens == len(tiny_engine.encode("hello"))


def test_stop_strings_cut_the_text(tiny_engine):
    [full] = tiny_engine.generate(_raw(["Once upon"], temperature=0.0, max_tokens=20))
    text = full.text
    assert len(text) > 4
    stop = text[3:5]
    [cut] = tiny_engine.generate(_raw(["Once upon"], temperature=0.0, max_tokens=20, stop=[stop]))
    assert cut.text == text[: text.find(stop)]
    assert cut.finish_reasons == ["stop"]


def test_chat_messages_use_the_chat_template(tiny_engine):
    msgs = [{"role": "user", "content": "hello there"}]
    rendered = tiny_engine.format_chat(msgs)
    assert rendered.endswith("<|im_start|>assistant\n") and "hello there" in rendered
    [a] = tiny_engine.generate([GenerationRequest(messages=msgs, temperature=0.0, max_tokens=5)])
    [b] = tiny_engine.generate(_raw([rendered], temperature=0.0, max_tokens=5))
    assert a.texts == b.texts


def test_choice_logprobs_equal_direct_forward(tiny_engine):
    prompts = ["Score the answer from 1 to 5. Score:", "The best rating is", "x"]
    choices = ["1", "2", "3", "4", "5"]
    got = tiny_engine.choice_logprobs(prompts, choices)
    ids = tiny_engine.choice_token_ids(choices)
    for p, row in zip(prompts, got):
        x = torch.tensor([tiny_engine.encode(p)])
        with torch.no_grad():
            logits = tiny_engine.model(input_ids=x).logits[0, -1].float()
        want = torch.log_softmax(logits, -1)[ids]
        assert torch.allclose(torch.tensor(row), want, atol=1e-4)


def test_choice_logprobs_rejects_multi_token_choices(tiny_engine):
    with pytest.raises(ValueError, match="one token"):
        tiny_engine.choice_logprobs(["x"], ["excellent answer"])


def test_continuation_logprobs_equal_manual_computation(tiny_engine):
    prompts = ["Question: what is two plus two?\nAnswer:", "Hello", ""]
    conts = [" Four, of course.", " world, how are you today?", "Just text."]
    got = tiny_engine.continuation_logprobs(prompts, conts)
    for p, c, score in zip(prompts, conts, got):
        p_ids = tiny_engine.encode(p) or [tiny_engine.tokenizer.bos_token_id]
        c_ids = tiny_engine.encode(c)
        x = torch.tensor([p_ids + c_ids])
        with torch.no_grad():
            logp = torch.log_softmax(tiny_engine.model(input_ids=x).logits[0].float(), -1)
        manual = [float(logp[len(p_ids) - 1 + k, t]) for k, t in enumerate(c_ids)]
        assert score.n_tokens == len(c_ids)
        assert score.token_logprobs == pytest.approx(manual, abs=1e-4)
        assert score.sum == pytest.approx(sum(manual), abs=1e-3)
        assert score.mean == pytest.approx(sum(manual) / len(manual), abs=1e-4)


def test_unknown_engine_kind_is_refused_before_work():
    with pytest.raises(EngineCapabilityError, match="endpoint"):
        make_engine("whatever", EngineConfig(kind="endpoint"))


def test_real_smollm2_answers_a_simple_question(smollm2_dir):
    engine = TransformersEngine(smollm2_dir, EngineConfig(progress=False))
    [res] = engine.generate([GenerationRequest(
        messages=[{"role": "user", "content": "What is the capital of France?"}], temperature=0.0, max_tokens=30)])
    assert "Paris" in res.text
    assert res.finish_reasons == ["stop"]
    # the rubric's digits are single tokens for this tokenizer
    assert len(engine.choice_token_ids(["1", "2", "3", "4", "5"])) == 5


def test_choice_logprobs_with_a_shared_prefix_equal_direct_forward(tiny_engine):
    # scoring prompts from one template share a long prefix; its KV cache is computed once and shared
    header = "Rate the answer below on a scale from one to five. " * 6
    prompts = [header + tail for tail in ["Answer: yes. Score:", "Answer: a much longer reply here. Score:",
                                          "Score:"]]
    ids = tiny_engine.choice_token_ids(["1", "2", "3", "4", "5"])
    assert tiny_engine._last_logits_shared_prefix([tiny_engine.encode(p) for p in prompts]) is not None
    got = tiny_engine.choice_logprobs(prompts, ["1", "2", "3", "4", "5"])
    for p, row in zip(prompts, got):
        x = torch.tensor([tiny_engine.encode(p)])
        with torch.no_grad():
            want = torch.log_softmax(tiny_engine.model(input_ids=x).logits[0, -1].float(), -1)[ids]
        assert torch.allclose(torch.tensor(row), want, atol=1e-4)


@pytest.mark.parametrize("units", [True, False])
def test_bfloat16_on_a_cpu_without_bf16_units_runs_in_float32(tiny_model_dir, tmp_path, monkeypatch, units):
    """torch emulates bf16 matmuls on a CPU without AMX / AVX512-BF16, many times slower than fp32: there the
    engine and training use fp32 instead; with the units they keep bf16."""
    from humpback.core import hardware
    from humpback.stages.train.config import TrainConfig
    from humpback.stages.train.sft import _bf16

    monkeypatch.setattr(hardware, "cpu_has_bf16_units", lambda: units)
    engine = TransformersEngine(tiny_model_dir, EngineConfig(dtype="bfloat16", progress=False))
    assert next(engine.model.parameters()).dtype == (torch.bfloat16 if units else torch.float32)
    assert _bf16(TrainConfig(precision="bfloat16"), "cpu") is units
    assert _bf16(TrainConfig(precision="auto"), "cpu") is units
    assert _bf16(TrainConfig(precision="float32"), "cpu") is False
    # dtype auto takes a checkpoint's own dtype: a bf16 one too runs in fp32 on a CPU without the units
    bf16_dir = tmp_path / "bf16"
    engine.model.to(torch.bfloat16).save_pretrained(bf16_dir)
    engine.tokenizer.save_pretrained(bf16_dir)
    auto = TransformersEngine(str(bf16_dir), EngineConfig(dtype="auto", progress=False))
    assert next(auto.model.parameters()).dtype == (torch.bfloat16 if units else torch.float32)
