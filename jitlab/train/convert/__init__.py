"""Load the authors' released JiT checkpoints, and convert them to jitlab's Lightning layout.

- ``read``: the release's ``.pth`` read safely (weights only, plus ``argparse.Namespace``).
- ``network``: the network its ``args.model`` names (else read from the tensor shapes), loaded strictly.
- ``lightning``: the jitlab checkpoint (``jitlab convert-official``, `jitlab.train.checkpoint.load_module` reads it).
"""

from jitlab.train.convert.lightning import (build_converted, convert_official, estimate_steps_per_epoch,
                                            official_sampling, save_atomic)
from jitlab.train.convert.network import (build_official, check_state_dict, infer_architecture, load_official,
                                          shape_facts)
from jitlab.train.convert.read import OfficialCheckpointError, read_official, release_args

__all__ = ["OfficialCheckpointError", "read_official", "release_args", "shape_facts", "infer_architecture",
           "check_state_dict", "build_official", "load_official", "estimate_steps_per_epoch", "official_sampling",
           "build_converted", "convert_official", "save_atomic"]
