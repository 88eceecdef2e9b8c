"""Type stub of skybatch's lazily loaded top-level names (SPEC 1): what ``skybatch.__getattr__`` returns.

One line per entry of ``skybatch._LAZY`` (tests/test_packaging.py checks that they agree)."""

from skybatch.cluster import cluster_client as cluster_client
from skybatch.cluster import current_client as current_client
from skybatch.jobs.classify import Config as ClassifyConfig
from skybatch.jobs.classify import Report as ClassifyReport
from skybatch.jobs.classify import run as run_classify
from skybatch.jobs.difference import Config as DifferenceConfig
from skybatch.jobs.difference import Report as DifferenceReport
from skybatch.jobs.difference import run as run_difference
from skybatch.jobs.embed import Config as EmbedConfig
from skybatch.jobs.embed import Report as EmbedReport
from skybatch.jobs.embed import run as run_embed
from skybatch.jobs.entry import difference as difference
from skybatch.jobs.entry import ingest as ingest
from skybatch.jobs.entry import ingest_tiles as ingest_tiles
from skybatch.jobs.entry import map_model as map_model
from skybatch.jobs.entry import preprocess as preprocess
from skybatch.jobs.ingest import Config as IngestConfig
from skybatch.jobs.ingest import Report as IngestReport
from skybatch.jobs.ingest import run as run_ingest
from skybatch.jobs.preprocess import Config as PreprocessConfig
from skybatch.jobs.preprocess import Report as PreprocessReport
from skybatch.jobs.preprocess import run as run_preprocess
from skybatch.jobs.realbogus import TrainConfig as RealBogusTrainConfig
from skybatch.jobs.realbogus import TrainReport as RealBogusTrainReport
from skybatch.jobs.realbogus import run as run_realbogus_train
from skybatch.jobs.score import Config as ScoreConfig
from skybatch.jobs.score import Report as ScoreReport
from skybatch.jobs.score import run as run_score
from skybatch.jobs.tile_embed import Config as TileEmbedConfig
from skybatch.jobs.tile_embed import Report as TileEmbedReport
from skybatch.jobs.tile_embed import run as run_tile_embed
from skybatch.jobs.tile_ingest import Config as TileIngestConfig
from skybatch.jobs.tile_ingest import Report as TileIngestReport
from skybatch.jobs.tile_ingest import run as run_ingest_tiles
from skybatch.jobs.tile_train import Config as TileTrainConfig
from skybatch.jobs.tile_train import Report as TileTrainReport
from skybatch.jobs.tile_train import run as run_tile_train
from skybatch.jobs.train import Config as TrainConfig
from skybatch.jobs.train import Report as TrainReport
from skybatch.jobs.train import run as run_train
from skybatch.pipeline.map_model import MapModelReport as MapModelReport
from skybatch.store.spectra_store import open_store as open_store
from skybatch.store.tile_store import TileStore as TileStore
from skybatch.store.tile_store import open_tile_store as open_tile_store

__version__: str
__all__ = [
    "__version__",
    "ingest",
    "preprocess",
    "map_model",
    "ingest_tiles",
    "difference",
    "open_store",
    "open_tile_store",
    "TileStore",
    "MapModelReport",
    "cluster_client",
    "current_client",
    "IngestConfig",
    "TileIngestConfig",
    "PreprocessConfig",
    "DifferenceConfig",
    "TrainConfig",
    "TileTrainConfig",
    "ScoreConfig",
    "ClassifyConfig",
    "EmbedConfig",
    "TileEmbedConfig",
    "RealBogusTrainConfig",
    "IngestReport",
    "TileIngestReport",
    "PreprocessReport",
    "DifferenceReport",
    "TrainReport",
    "TileTrainReport",
    "ScoreReport",
    "ClassifyReport",
    "EmbedReport",
    "TileEmbedReport",
    "RealBogusTrainReport",
    "run_ingest",
    "run_ingest_tiles",
    "run_preprocess",
    "run_difference",
    "run_train",
    "run_tile_train",
    "run_score",
    "run_classify",
    "run_embed",
    "run_tile_embed",
    "run_realbogus_train",
]
