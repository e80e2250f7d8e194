"""The vLLM engine: its contract against a fake of vLLM 0.24.0's API (here) and against real vLLM (on a GPU)."""

from __future__ import annotations

import asyncio
import enum
import importlib.util
import logging
import os
import sys
import types
from dataclasses import dataclass

import pytest

from inference.engines import GenerationRequest
from inference.vllm_engine import VLLM_VERSION, VLLMEngine
from ragfn.core.errors import ConfigError

HAS_VLLM = importlib.util.find_spec("vllm") is not None
MESSAGES = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Say hello."}]


# --- FakeVLLM: a stand-in for the part of vLLM 0.24.0's public API that VLLMEngine touches -----------------------


class RequestOutputKind(enum.Enum):  # vllm.sampling_params.RequestOutputKind
    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


@dataclass
class CompletionOutput:  # vllm.outputs.CompletionOutput, the fields the adapter reads
    text: str
    token_ids: list[int]
    finish_reason: str | None = None
    index: int = 0


@dataclass
class RequestOutput:  # vllm.outputs.RequestOutput
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool


class FakeTokenizer:
    def __init__(self) -> None:
        self.calls: list[dict] = []

    def apply_chat_template(self, conversation, tools=None, *, tokenize=True, add_generation_prompt=False, **kwargs):
        self.calls.append({"messages": conversation, "tokenize": tokenize,
                           "add_generation_prompt": add_generation_prompt})
        text = "".join(f"<|{m['role']}|>{m['content']}\n" for m in conversation)
        return text + ("<|assistant|>" if add_generation_prompt else "")


class FakeVLLM:
    """A stand-in for vLLM 0.24.0's public API, because vllm needs a CUDA GPU and cannot run here. It is installed as
    the modules `vllm` and `vllm.sampling_params` and mirrors the names and the sync/async split of 0.24.0:
    `AsyncLLMEngine.from_engine_args` (classmethod), `generate` (async generator of RequestOutput, DELTA pieces),
    `abort` (coroutine), `get_tokenizer` and `shutdown` (plain methods), `SamplingParams(**keywords)`.

    `deltas` is the script: (text, token ids) per RequestOutput; the last one is finished with `finish_reason`,
    unless `hang` leaves the request running (it then waits after the script, as a long generation does)."""

    def __init__(self, deltas=(("Hello", [11, 12]), ("", [13]), (",", [14]), (" world", [15])),
                 finish_reason="stop", *, hang=False, fail=False, version=VLLM_VERSION) -> None:
        self.deltas, self.finish_reason, self.hang, self.fail = list(deltas), finish_reason, hang, fail
        self.engines: list = []
        fake = self

        class AsyncEngineArgs:
            def __init__(self, model: str, **kwargs) -> None:
                self.model, self.kwargs = model, kwargs

        class SamplingParams:
            def __init__(self, *, max_tokens=16, temperature=1.0, stop=None,
                         output_kind=RequestOutputKind.CUMULATIVE) -> None:
                self.max_tokens, self.temperature, self.stop, self.output_kind = (max_tokens, temperature, stop,
                                                                                  output_kind)

        class AsyncLLMEngine:  # vllm.AsyncLLMEngine, an alias of vllm.v1.engine.async_llm.AsyncLLM
            def __init__(self, engine_args) -> None:
                self.engine_args, self.tokenizer = engine_args, FakeTokenizer()
                self.generated: list[dict] = []
                self.aborted: list[str] = []
                self.closed: list[str] = []
                self.shut_down = False

            @classmethod
            def from_engine_args(cls, engine_args, start_engine_loop=True, usage_context=None, stat_loggers=None):
                engine = cls(engine_args)
                fake.engines.append(engine)
                return engine

            def get_tokenizer(self):
                return self.tokenizer

            async def generate(self, prompt, sampling_params, request_id, *, tokenization_kwargs=None, **kwargs):
                self.generated.append({"prompt": prompt, "params": sampling_params, "request_id": request_id,
                                       "tokenization_kwargs": tokenization_kwargs})
                prompt_ids = list(range(len(prompt)))  # one token per character
                try:
                    for i, (text, ids) in enumerate(fake.deltas):
                        await asyncio.sleep(0)
                        if fake.fail and i == 1:
                            raise RuntimeError("engine core died")
                        last = i == len(fake.deltas) - 1 and not fake.hang
                        completion = CompletionOutput(text, list(ids), fake.finish_reason if last else None)
                        yield RequestOutput(request_id, prompt_ids, [completion], last)
                    if fake.hang:
                        await asyncio.Event().wait()
                finally:
                    self.closed.append(request_id)

            async def abort(self, request_id, internal=False) -> None:
                self.aborted.append(request_id)

            def shutdown(self, timeout=None) -> None:
                self.shut_down = True

        self.vllm = types.ModuleType("vllm")
        self.sampling_params = types.ModuleType("vllm.sampling_params")
        self.sampling_params.RequestOutputKind = RequestOutputKind
        self.sampling_params.SamplingParams = SamplingParams
        self.vllm.__version__ = version
        self.vllm.sampling_params = self.sampling_params
        self.vllm.AsyncEngineArgs, self.vllm.AsyncLLMEngine, self.vllm.SamplingParams = (AsyncEngineArgs,
                                                                                        AsyncLLMEngine, SamplingParams)

    def install(self, monkeypatch) -> FakeVLLM:
        monkeypatch.setitem(sys.modules, "vllm", self.vllm)
        monkeypatch.setitem(sys.modules, "vllm.sampling_params", self.sampling_params)
        return self

    @property
    def engine(self):
        (engine,) = self.engines
        return engine


def loaded(monkeypatch, fake: FakeVLLM, **options) -> VLLMEngine:
    fake.install(monkeypatch)
    engine = VLLMEngine("Qwen/Qwen2.5-0.5B-Instruct", **options)
    engine.load()
    return engine


def collect(engine: VLLMEngine, request: GenerationRequest) -> list:
    async def run():
        return [piece async for piece in engine.astream(request)]
    return asyncio.run(run())


@pytest.mark.unit
class TestWithoutVLLM:
    def test_the_module_and_the_constructor_import_nothing_from_vllm(self):
        engine = VLLMEngine("Qwen/Qwen2.5-0.5B-Instruct/", concurrency=8, engine_args={"max_model_len": 4096})
        assert (engine.name, engine.concurrency) == ("Qwen2.5-0.5B-Instruct", 8)
        if not HAS_VLLM:
            assert "vllm" not in sys.modules

    @pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here, so the missing-vllm error cannot happen")
    def test_loading_without_vllm_is_a_config_error_naming_the_pin_and_the_alternative(self):
        with pytest.raises(ConfigError, match="0.24.0") as error:
            VLLMEngine("x").load()
        assert "vllm==0.24.0" in error.value.hint and "RAGFN_LLM_ENGINE=llamacpp" in error.value.hint

    def test_streaming_before_load_is_a_config_error(self):
        with pytest.raises(ConfigError, match="not loaded"):
            collect(VLLMEngine("x"), GenerationRequest(MESSAGES))


@pytest.mark.unit
class TestAgainstFakeVLLM:
    def test_load_builds_the_engine_from_engine_args(self, monkeypatch):
        fake = FakeVLLM()
        engine = loaded(monkeypatch, fake, engine_args={"max_model_len": 4096})
        engine.load()  # a second load is a no-op
        assert fake.engine.engine_args.model == "Qwen/Qwen2.5-0.5B-Instruct"
        assert fake.engine.engine_args.kwargs == {"max_model_len": 4096}
        engine.close()
        assert fake.engine.shut_down

    def test_another_vllm_version_logs_a_warning_and_still_loads(self, monkeypatch, caplog):
        with caplog.at_level(logging.WARNING, logger="inference.vllm_engine"):
            loaded(monkeypatch, FakeVLLM(version="0.23.1"))
        assert "0.23.1" in caplog.text and "0.24.0" in caplog.text
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="inference.vllm_engine"):
            loaded(monkeypatch, FakeVLLM(version="0.24.0+cu129"))
        assert caplog.text == ""

    def test_chat_messages_stream_as_deltas_then_a_final_piece_with_usage(self, monkeypatch):
        fake = FakeVLLM()
        engine = loaded(monkeypatch, fake)
        request = GenerationRequest(MESSAGES, max_tokens=32, temperature=0.0, stop=("\n\n", "END"))
        pieces = collect(engine, request)

        assert fake.engine.tokenizer.calls == [{"messages": MESSAGES, "tokenize": False, "add_generation_prompt": True}]
        (call,) = fake.engine.generated
        prompt = "<|system|>Answer briefly.\n<|user|>Say hello.\n<|assistant|>"
        assert call["prompt"] == prompt and call["request_id"] == request.request_id
        assert call["tokenization_kwargs"] == {"add_special_tokens": False}  # the template wrote the BOS already
        params = call["params"]
        assert (params.max_tokens, params.temperature, params.stop) == (32, 0.0, ["\n\n", "END"])
        assert params.output_kind is RequestOutputKind.DELTA

        assert "".join(p.text for p in pieces) == "Hello, world"
        assert [p.text for p in pieces] == ["Hello", ",", " world"]  # the empty delta is not a piece
        assert all(p.finish_reason is None and p.usage == {} for p in pieces[:-1])
        assert pieces[-1].finish_reason == "stop"
        assert pieces[-1].usage == {"prompt_tokens": len(prompt), "completion_tokens": 5}
        assert fake.engine.aborted == [] and fake.engine.closed == [request.request_id]

    def test_a_raw_prompt_is_sent_as_is_and_length_is_reported(self, monkeypatch):
        fake = FakeVLLM(finish_reason="length")
        engine = loaded(monkeypatch, fake)
        pieces = collect(engine, GenerationRequest(prompt="Once upon a time", max_tokens=5, temperature=0.7))
        (call,) = fake.engine.generated
        assert call["prompt"] == "Once upon a time" and call["tokenization_kwargs"] is None
        assert fake.engine.tokenizer.calls == []
        assert (call["params"].max_tokens, call["params"].temperature, call["params"].stop) == (5, 0.7, None)
        assert pieces[-1].finish_reason == "length"
        assert pieces[-1].usage == {"prompt_tokens": 16, "completion_tokens": 5}

    def test_closing_the_stream_early_aborts_the_request(self, monkeypatch):
        fake = FakeVLLM(deltas=[(f" word{i}", [i]) for i in range(10)])
        engine = loaded(monkeypatch, fake)
        request = GenerationRequest(MESSAGES, request_id="req-early")

        async def run():
            stream = engine.astream(request)
            first = [await anext(stream), await anext(stream)]
            await stream.aclose()  # what a client disconnect does
            # vLLM's own generator is closed at once, not when the GC or the loop's shutdown gets to it
            assert fake.engine.closed == ["req-early"]
            return first

        first = asyncio.run(run())
        assert [p.text for p in first] == [" word0", " word1"] and all(p.finish_reason is None for p in first)
        assert fake.engine.aborted == ["req-early"]

    def test_cancelling_the_consumer_aborts_the_request(self, monkeypatch):
        fake = FakeVLLM(deltas=[("Once", [1])], hang=True)
        engine = loaded(monkeypatch, fake)
        request = GenerationRequest(MESSAGES, request_id="req-cancel")

        async def run():
            seen = asyncio.Event()

            async def consume():
                async for _ in engine.astream(request):
                    seen.set()

            task = asyncio.create_task(consume())
            await seen.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(run())
        assert fake.engine.aborted == ["req-cancel"] and fake.engine.closed == ["req-cancel"]

    def test_an_engine_error_aborts_the_request_and_propagates(self, monkeypatch):
        fake = FakeVLLM(fail=True)
        engine = loaded(monkeypatch, fake)
        with pytest.raises(RuntimeError, match="engine core died"):
            collect(engine, GenerationRequest(MESSAGES, request_id="req-error"))
        assert fake.engine.aborted == ["req-error"]

    def test_a_finished_request_is_not_aborted_even_if_closed_after_its_last_piece(self, monkeypatch):
        fake = FakeVLLM()
        engine = loaded(monkeypatch, fake)

        async def run():
            stream = engine.astream(GenerationRequest(MESSAGES))
            async for piece in stream:
                if piece.finish_reason:
                    await stream.aclose()
                    return piece

        assert asyncio.run(run()).finish_reason == "stop"
        assert fake.engine.aborted == []


# --- real vLLM: needs a CUDA GPU, vllm==0.24.0 and RAGFN_VLLM_TEST_MODEL (a small chat model id or folder) --------


@pytest.fixture(scope="module")
def gpu_engine():
    pytest.importorskip("vllm", reason="vllm 0.24.0 needs a CUDA GPU and is not installable on this machine; "
                                       "the llama.cpp engine exercises the engine contract in CI")
    model = os.environ.get("RAGFN_VLLM_TEST_MODEL")
    if not model:
        pytest.skip("set RAGFN_VLLM_TEST_MODEL to a small chat model (e.g. Qwen/Qwen2.5-0.5B-Instruct) to run these")
    engine = VLLMEngine(model, engine_args={"max_model_len": 2048, "gpu_memory_utilization": 0.5,
                                            "enforce_eager": True})
    engine.load()
    loop = asyncio.new_event_loop()  # one loop for the module: vLLM's output handler task lives on it
    yield engine, loop
    engine.close()
    loop.close()


def gpu_collect(gpu_engine, request: GenerationRequest) -> list:
    engine, loop = gpu_engine

    async def run():
        return [piece async for piece in engine.astream(request)]
    return loop.run_until_complete(run())


def ask(text: str, **options) -> GenerationRequest:
    return GenerationRequest([{"role": "user", "content": text}], **options)


@pytest.mark.gpu
class TestRealVLLM:
    def test_generates_text_and_stops_at_max_tokens(self, gpu_engine):
        pieces = gpu_collect(gpu_engine, ask("Name three colours.", max_tokens=12))
        assert "".join(p.text for p in pieces).strip() and pieces[-1].finish_reason == "length"
        assert pieces[-1].usage["completion_tokens"] == 12 and pieces[-1].usage["prompt_tokens"] > 0
        assert all(p.finish_reason is None for p in pieces[:-1])

    def test_stop_sequences_end_the_answer_before_them(self, gpu_engine):
        request = ask("Count from 1 to 10, one number per line.", max_tokens=60, stop=("5",))
        pieces = gpu_collect(gpu_engine, request)
        text = "".join(p.text for p in pieces)
        assert "4" in text and "5" not in text and pieces[-1].finish_reason == "stop"

    def test_greedy_decoding_is_repeatable(self, gpu_engine):
        first, second = (gpu_collect(gpu_engine, ask("What is Python?", max_tokens=16)) for _ in range(2))
        assert "".join(p.text for p in first) == "".join(p.text for p in second)

    def test_closing_the_stream_aborts_and_the_engine_keeps_serving(self, gpu_engine):
        engine, loop = gpu_engine

        async def run():
            stream = engine.astream(ask("Write a long story about a dragon.", max_tokens=500))
            first = [await anext(stream) for _ in range(3)]
            await stream.aclose()
            return first

        assert all(p.finish_reason is None for p in loop.run_until_complete(run()))
        assert gpu_collect(gpu_engine, ask("Say hi.", max_tokens=4))[-1].finish_reason == "length"
