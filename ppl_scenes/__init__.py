"""ppl_scenes: generative, object-centric scene models in Pyro.

Everything a user needs is importable from here, one level deep::

    from ppl_scenes import SPAIR, fit, make_dataset, load

Models
    ``SPAIR``, ``SPAIRConfig``, ``SPAIRGuide`` -- Crawford & Pineau (AAAI 2019);
    ``GMAIR``, ``GMAIRConfig``, ``GMAIRGuide`` -- Zhu et al. (2021), SPAIR with object clusters;
    ``MIST``, ``MISTConfig`` -- Angles et al. (CVPR 2021), top-K patches trained by lifting (its
    baselines ``mist_grid`` and ``mist_channelwise`` live in :mod:`ppl_scenes.baselines`);
    ``VariationalSaccading``, ``SaccadeConfig`` -- Ramapuram et al. (BMVC 2019), a VRNN choosing
    glimpses of a large image from a small proxy;
    ``SSDIR``, ``SSDIRConfig`` -- Zielinski & Kajdanowicz, object codes from the pyramid of a frozen,
    supervised single-shot detector (trained first, in the same run);
    ``SceneModel`` -- the base class every model shares; ``SceneParse`` -- what ``model.parse``
    returns; ``MODELS`` -- the registry of models by CLI name (``{"spair": SPAIR, ...}``).
Training and run directories
    ``fit`` -- train any model with its own trainer (SVI for the variational models);
    ``TrainConfig`` -- the training settings; ``TrainingDiverged`` -- raised when training blows up;
    ``load`` -- restore a trained model from its run directory; ``RunDirError`` -- a missing or
    corrupt run directory.
Data
    ``make_dataset`` -- build a scene generator by name; ``DATASETS`` -- the registry of generators
    (``{"scattered": ScatteredDigits, ...}``); the generators ``ScatteredDigits``,
    ``LargeScatteredDigits``, ``MultiMNIST``, ``MultiScaleDigits``, ``ClutteredDigits``,
    ``MISTDigits``, ``GaborNoise``, ``Shapes`` and the ``RandomCrops`` and ``Upscaled`` wrappers;
    ``ImageFolderScenes`` -- crops of your own image files (``make_dataset("images", paths=...)``);
    their base class ``SceneDataset``; ``collate_scenes`` (a DataLoader ``collate_fn``);
    ``load_digits`` (MNIST or the offline fallback); ``DigitFallbackWarning`` -- warned once when
    MNIST is unavailable.
Pretrained models
    ``pretrained`` -- a model trained and shipped in the package (``pretrained("spair")``: no
    training, no network); ``pretrained_info`` -- its model card; ``pretrained_names`` -- the shipped
    ones. Each model's named recipes are ``Model.preset(name)`` (``ppl-scenes presets`` lists them).
Your own images
    ``parse_files`` -- parse every image of folders, globs or files with a trained model into COCO
    records (:mod:`ppl_scenes.files` writes them and scores them against COCO ground truth).

``__version__`` is the package version. Figures live in :mod:`ppl_scenes.viz`, metrics in
:mod:`ppl_scenes.metrics`, the command line (``ppl-scenes``) in :mod:`ppl_scenes.cli`.
"""

# Registers the baselines that are trainable models too (``ppl-scenes train mist_grid`` ...).
import ppl_scenes.baselines  # noqa: F401
from ppl_scenes._version import __version__
from ppl_scenes.data import (
    DATASETS,
    ClutteredDigits,
    DigitFallbackWarning,
    GaborNoise,
    ImageFolderScenes,
    LargeScatteredDigits,
    MISTDigits,
    MultiMNIST,
    MultiScaleDigits,
    RandomCrops,
    ScatteredDigits,
    SceneDataset,
    Shapes,
    Upscaled,
    collate_scenes,
    load_digits,
    make_dataset,
)
from ppl_scenes.files import parse_files
from ppl_scenes.infer import TrainConfig, TrainingDiverged, fit
from ppl_scenes.models import (
    GMAIR,
    MIST,
    MODELS,
    SPAIR,
    SSDIR,
    GMAIRConfig,
    GMAIRGuide,
    MISTConfig,
    SaccadeConfig,
    SceneModel,
    SceneParse,
    SPAIRConfig,
    SPAIRGuide,
    SSDIRConfig,
    VariationalSaccading,
)
from ppl_scenes.runs import RunDirError, load
from ppl_scenes.zoo import pretrained, pretrained_info, pretrained_names

__all__ = [
    "DATASETS",
    "GMAIR",
    "GMAIRConfig",
    "GMAIRGuide",
    "MIST",
    "MISTConfig",
    "MODELS",
    "SPAIR",
    "ClutteredDigits",
    "DigitFallbackWarning",
    "GaborNoise",
    "ImageFolderScenes",
    "LargeScatteredDigits",
    "MISTDigits",
    "MultiMNIST",
    "MultiScaleDigits",
    "RandomCrops",
    "Upscaled",
    "RunDirError",
    "SPAIRConfig",
    "SPAIRGuide",
    "SSDIR",
    "SSDIRConfig",
    "SaccadeConfig",
    "ScatteredDigits",
    "SceneDataset",
    "SceneModel",
    "SceneParse",
    "Shapes",
    "TrainConfig",
    "TrainingDiverged",
    "VariationalSaccading",
    "__version__",
    "collate_scenes",
    "fit",
    "load",
    "load_digits",
    "make_dataset",
    "parse_files",
    "pretrained",
    "pretrained_info",
    "pretrained_names",
]
