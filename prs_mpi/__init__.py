"""prs-mpi: batch inference over large datasets on HPC clusters, the MPI way (ParallelRunStep semantics)."""
from .entry import EntryScript, MiniBatchContext, get_model_path, get_side_input

__version__ = "0.1.0"
__all__ = ["EntryScript", "MiniBatchContext", "get_model_path", "get_side_input", "__version__"]
