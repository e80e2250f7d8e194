"""embed: a chunk batch in, the same batch with its vectors out (reusing vectors of unchanged chunks)."""

from ragfn import events
from ragfn.events import ChunkBatch
from ragfn.handler import InboundEvent, cloud_function
from ragfn.publish import StageResult
from ragfn.pipeline import embed_batch
from ragfn.runtime import Runtime


@cloud_function("embed", accepts={events.CHUNKS: ChunkBatch})
def handle(event: InboundEvent, runtime: Runtime) -> StageResult:
    return embed_batch(event.data, runtime)
