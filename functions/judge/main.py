"""judge: the background judge. A sampled live answer (answer.sampled, from the ask gateway) in; the judge model's
relevance and groundedness out, as Prometheus metrics on GET /metrics (ragfn.llm.background_judge).

Off unless RAGFN_JUDGE_URL is set: without it the gateway samples nothing, so nothing reaches this function.
"""

from ragfn.eventing import events
from ragfn.eventing.events import AnswerSampled
from ragfn.eventing.publish import StageResult
from ragfn.llm.background_judge import judge_sample
from ragfn.serve.handler import InboundEvent, cloud_function
from ragfn.serve.runtime import Runtime


@cloud_function("judge", accepts={events.ANSWER_SAMPLED: AnswerSampled}, reply_with_event=False,
                metrics=lambda runtime: runtime.judge_metrics.registry)
def handle(event: InboundEvent, runtime: Runtime) -> StageResult:
    return StageResult([], judge_sample(event.data, lambda: runtime.judge, runtime.judge_metrics))
