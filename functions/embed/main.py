"""embed: a chunk batch in, the same batch with its vectors out (reusing vectors of unchanged chunks)."""

from ragfn.eventing import events
from ragfn.eventing.events import ChunkBatch
from ragfn.eventing.publish import StageResult
from ragfn.ingest.pipeline import embed_batch
from ragfn.serve.handler import InboundEvent, cloud_function
from ragfn.serve.runtime import Runtime


@cloud_function("embed", accepts={events.CHUNKS: ChunkBatch}, uses_index=True)
def handle(event: InboundEvent, runtime: Runtime) -> StageResult:
    return embed_batch(event.data, runtime)
