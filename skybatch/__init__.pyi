"""Type stub of skybatch's lazily loaded top-level names (SPEC 1): what ``skybatch.__getattr__`` returns."""

from skybatch.cluster import cluster_client as cluster_client
from skybatch.cluster import current_client as current_client
from skybatch.jobs.entry import difference as difference
from skybatch.jobs.entry import ingest as ingest
from skybatch.jobs.entry import ingest_tiles as ingest_tiles
from skybatch.jobs.entry import map_model as map_model
from skybatch.jobs.entry import preprocess as preprocess
from skybatch.pipeline.map_model import MapModelReport as MapModelReport
from skybatch.store.spectra_store import open_store as open_store
from skybatch.store.tile_store import TileStore as TileStore
from skybatch.store.tile_store import open_tile_store as open_tile_store

__version__: str
__all__: list[str]
