"""Runs: what a training run is (:class:`RunSpec`), training it into a run directory, and loading it back.

A :class:`RunSpec` names the model and its config overrides, the scene generator and its arguments,
and the training settings; ``RunSpec.from_overrides`` reads them from command-line text,
``RunSpec.from_run_dir`` from a run's ``config.json``, and :meth:`RunSpec.train` trains into a run
directory and scores the test split. ``RunSpec.for_images`` makes a run on your own image files
(the ``"images"`` dataset: no labels, so the run is scored on its validation crops by
:func:`ppl_scenes.files.evaluate_unlabelled`). ``load(run_dir)`` rebuilds any trained model from its run
directory: its config from ``config.json``, its weights from the checksummed ``weights.safetensors``
(nothing is unpickled). What a run directory holds, and every read and write of it, is
:mod:`ppl_scenes.rundir`; its names are re-exported here.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch

from ppl_scenes.config import coerced_fields, parse_value, replace_config, split_overrides
from ppl_scenes.data import DATASETS, ImageFolderScenes, make_dataset
from ppl_scenes.files import evaluate_unlabelled
from ppl_scenes.infer import TrainConfig, fit
from ppl_scenes.models import MODELS
from ppl_scenes.models.base import DetectorStage, ImageLevel, SceneModel, TiledParse
from ppl_scenes.models.preset import merge_overrides
from ppl_scenes.rundir import (
    CONFIG_FILE,
    EVAL_FILE,
    METRICS_FILE,
    RunDir,
    RunDirError,
    atomic_write_bytes,
    json_value,
    read_config,
    read_metrics,
    strict_json,
    upgrade,
    write_json,
)
from ppl_scenes.sizing import ObjectSizeNotApplicable, object_size_overrides
from ppl_scenes.zoo import pretrained_info

#: Test scenes scored at the end of a run and by ``ppl-scenes eval`` unless told otherwise.
DEFAULT_NUM_TEST = 500
#: Options of a generator that never go into ``config.json`` (they depend on the machine).
_MACHINE_KEYS = ("root",)
#: The dataset of runs on your own image files (:class:`~ppl_scenes.data.ImageFolderScenes`).
IMAGES_DATASET = "images"
#: Validation crops scored at the end of an images run unless told otherwise.
DEFAULT_NUM_VAL = 64
#: Data arguments of an images run that :meth:`RunSpec.for_images` takes as its own arguments.
_IMAGE_ARGS = ("paths", "crop", "flips", "channels", "val_paths", "object_size", "skip_bad")

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_NUM_TEST",
    "DEFAULT_NUM_VAL",
    "IMAGES_DATASET",
    "RunSpec",
    "TrainedRun",
    "build_dataset",
    "evaluate_scenes",
    "EVAL_FILE",
    "METRICS_FILE",
    "RunDir",
    "RunDirError",
    "atomic_write_bytes",
    "build_model",
    "json_value",
    "load",
    "read_config",
    "read_metrics",
    "strict_json",
    "upgrade",
    "write_json",
]


def build_model(name: str, model_config: dict[str, Any] | None = None):
    """Instantiate a registered model by name from a (JSON) config dict."""
    cls = _registered(name)
    config = replace_config(cls.config_class(), model_config or {})
    return cls(config)


def load(run_dir: str | os.PathLike, map_location: str | torch.device = "cpu"):
    """Restore a trained model from its run directory, in eval mode.

    Raises:
        RunDirError: when the directory, its config or its checkpoint is missing or corrupt, or the
            checkpoint is of the old pickle format (``ppl-scenes upgrade RUN_DIR`` converts it).
    """
    run = RunDir(run_dir)
    config = run.read_config()
    try:
        model = build_model(config["model"], config.get("model_config"))
    except ValueError as err:
        raise RunDirError(f"{Path(run_dir) / CONFIG_FILE}: {err}") from None
    state = run.load_checkpoint(map_location, weights_only=True)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, KeyError, AttributeError) as err:
        raise RunDirError(f"checkpoint in {run_dir} does not fit its model config: {err}") from None
    model.step = state["step"]
    model.set_step(model.step)
    return model.eval()


# -- data --------------------------------------------------------------------------------------------
def _builder_params(name: str) -> tuple[set[str], bool]:
    """Keyword arguments the dataset builder ``name`` accepts, and whether it takes ``**kwargs``."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    params = inspect.signature(DATASETS[name]).parameters.values()
    named = {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return named, any(p.kind is p.VAR_KEYWORD for p in params)


def _data_kwargs(name: str, raw: dict[str, str]) -> dict[str, Any]:
    """``data.KEY=VALUE`` overrides parsed and checked against the builder's signature."""
    named, open_ended = _builder_params(name)
    kwargs = {}
    for key, text in raw.items():
        if key == "split":
            raise ValueError("data.split cannot be set: training uses 'train' and evaluation 'test'")
        if key not in named and not open_ended:
            valid = ", ".join(sorted(named - {"split"}))
            raise ValueError(f"unknown option {key!r} for dataset {name!r}; valid options: {valid}")
        kwargs[key] = parse_value(text)
    return kwargs


def _json_ready(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Generator arguments as ``config.json`` keeps them (machine-specific ones left out)."""
    return {k: v for k, v in kwargs.items() if k not in _MACHINE_KEYS}


def _from_json(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Arguments read back from ``config.json``: JSON lists become the tuples the generators take."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def build_dataset(name: str, split: str, kwargs: dict[str, Any], root: str | None = None):
    """``make_dataset(name, split, **kwargs)`` with ``root`` passed where the generator reads digits."""
    named, open_ended = _builder_params(name)
    kwargs = dict(kwargs)
    if root is not None and ("root" in named or open_ended):
        kwargs.setdefault("root", root)
    try:
        return make_dataset(name, split, **kwargs)
    except TypeError as err:  # an argument the generator behind **kwargs does not take
        raise ValueError(f"bad options for dataset {name!r}: {err}") from None


# -- run specs -----------------------------------------------------------------------------------------
@dataclass
class TrainedRun:
    """What :meth:`RunSpec.train` returns: the model, its test scenes and scores, the seconds it took."""

    model: SceneModel
    test_set: Any
    metrics: dict[str, Any]
    seconds: float


@dataclass
class RunSpec:
    """A training run: model and config overrides, scene generator and arguments, training settings.

    Attributes:
        model: the registered model's name (``ppl_scenes.MODELS``).
        model_config: config fields that differ from the model's defaults (typed values).
        dataset: the scene generator's name (``ppl_scenes.DATASETS``; default: the model's).
        data_kwargs: the generator's arguments (the split excluded).
        train: :class:`~ppl_scenes.infer.TrainConfig` fields that differ from the model's defaults.
        num_test: test scenes scored at the end.
        data_root: where the generator reads MNIST (never recorded in ``config.json`` kwargs).
        preset: the model's preset the run started from (:meth:`SceneModel.preset`), or None.
    """

    model: str
    model_config: dict[str, Any] = field(default_factory=dict)
    dataset: str = ""
    data_kwargs: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    num_test: int = DEFAULT_NUM_TEST
    data_root: str | None = None
    preset: str | None = None

    def __post_init__(self):
        _registered(self.model)
        self.dataset = self.dataset or self.model_class.default_dataset

    @property
    def model_class(self) -> type[SceneModel]:
        """The registered class of :attr:`model`."""
        return MODELS[self.model]

    # -- building ------------------------------------------------------------------------------------
    @classmethod
    def from_overrides(
        cls,
        model: str,
        overrides: Sequence[str] = (),
        *,
        dataset: str | None = None,
        num_train: int | None = None,
        num_test: int | None = None,
        seed: int | None = None,
        steps: int | None = None,
        minutes: float | None = None,
        device: str | None = None,
        data_root: str | None = None,
        preset: str | None = None,
        info: Callable[[str], None] | None = None,
    ) -> RunSpec:
        """A new run from ``KEY=VALUE`` text (model config), ``train.KEY=VALUE`` and ``data.KEY=VALUE``.

        With ``preset``, the model's named recipe comes first (its overrides, scenes and number of
        training scenes); whatever is given explicitly wins, and ``info`` is told once which of the
        preset's settings were replaced.

        Raises:
            ValueError: naming the unknown model, preset, dataset, key or the bad value.
        """
        model_class = _registered(model)
        if preset is not None:
            recipe = model_class.preset(preset)
            # A minutes budget given alone replaces the preset's step count: it runs for its minutes.
            flags = {
                "train.steps": steps is not None or minutes is not None,
                "train.minutes": minutes is not None,
                "data.num_scenes": num_train is not None,
            }
            given_keys = tuple(key for key, given in flags.items() if given)
            overrides, replaced = merge_overrides(recipe, list(overrides), given_keys)
            if dataset is not None and recipe.dataset not in (None, dataset):
                replaced.append("dataset")
            if replaced and info is not None:
                info(f"preset {preset!r}: your {', '.join(sorted(set(replaced)))} replace the preset's")
            dataset = dataset or recipe.dataset
            num_train = num_train if num_train is not None else recipe.num_train
        model_raw, train_raw, data_raw = split_overrides(overrides)
        name = dataset or model_class.default_dataset
        kwargs = dict(model_class.default_data_kwargs) if name == model_class.default_dataset else {}
        kwargs.update(_data_kwargs(name, data_raw))
        _set_num_train(kwargs, num_train, data_raw)
        root = data_root if data_root is not None else kwargs.pop("root", None)
        train = _train_settings(train_raw, seed=seed, steps=steps, minutes=minutes, device=device)
        return cls(
            model=model,
            model_config=coerced_fields(model_class.config_class(), model_raw, "model config"),
            dataset=name,
            data_kwargs=kwargs,
            train=train,
            num_test=num_test or DEFAULT_NUM_TEST,
            data_root=root,
            preset=preset,
        )

    @classmethod
    def for_images(
        cls,
        model: str,
        paths: object,
        overrides: Sequence[str] = (),
        *,
        object_size: float | None = None,
        crop: int | tuple[int, int] | None = None,
        flips: bool | str = True,
        channels: int | None = None,
        val_paths: object = None,
        skip_bad: bool = False,
        num_train: int | None = None,
        num_test: int | None = None,
        seed: int | None = None,
        steps: int | None = None,
        minutes: float | None = None,
        device: str | None = None,
        info: Callable[[str], None] | None = None,
    ) -> RunSpec:
        """A new run of ``model`` on your own image files: random crops of the images of ``paths``.

        The dataset is ``"images"`` (:class:`~ppl_scenes.data.ImageFolderScenes`) with ``paths`` and
        ``val_paths`` made absolute (so that the run evaluates and resumes from any directory), the
        crop resolved (default: four object sides, within the smallest image; SSDIR without
        ``object_size``: its ``image_size``) and ``channels`` the images' own (3 when any is in
        colour) unless given. The model gets the same channels and, with ``object_size``, the sizes
        :func:`~ppl_scenes.sizing.object_size_overrides` derives from it; explicit ``KEY=VALUE``
        overrides win. With no labels to score, the run is scored on ``num_test`` validation crops
        (default :data:`DEFAULT_NUM_VAL`) by :func:`~ppl_scenes.files.evaluate_unlabelled`. The
        images are checked (headers only) before anything is trained.

        Args:
            model: a registered model of objects (``spair``, ``gmair``, ``mist``..., ``ssdir`` with
                ``detector_steps=0``).
            paths, crop, flips, channels, val_paths, skip_bad: :class:`ImageFolderScenes`' arguments.
            object_size: the typical side of one object, in pixels.
            overrides: ``KEY=VALUE`` model config, ``train.KEY=VALUE`` and ``data.KEY=VALUE`` text.
            num_train: training crops (``data.num_scenes``, default 1,000).
            info: told once which config fields ``object_size`` set.

        Raises:
            ObjectSizeNotApplicable: an image-level model (``saccade``, ``resnet``).
            ValueError: SSDIR with detector steps (its detector learns from box labels); bad paths or
                images (``ImageInputError``); an object size that is not positive or does not fit
                the images; bad overrides.
        """
        model_class = _registered(model)
        _check_object_model(model)
        model_raw, train_raw, data_raw = split_overrides(overrides)
        explicit = coerced_fields(model_class.config_class(), model_raw, "model config")
        config = replace_config(model_class.config_class(), explicit)
        if issubclass(model_class, DetectorStage) and config.detector_steps:
            raise ValueError(
                f"{model}'s detector is trained on box labels, which image files do not have: train "
                f"{model} on images only with detector_steps=0 (its detector given, e.g. by load_detector)"
            )
        taken = sorted(set(data_raw) & set(_IMAGE_ARGS))
        if taken:
            raise ValueError(f"data.{taken[0]} cannot be set on an images run: it has its own option")
        if channels is not None and "channels" in explicit and explicit["channels"] != channels:
            raise ValueError(f"channels={explicit['channels']} differs from --channels {channels}")
        fixed_input = issubclass(model_class, TiledParse) and model_class.fixed_input
        if crop is None and object_size is None and fixed_input:
            crop = tuple(config.image_size)  # the model's fixed input (SSDIR's detector)
        kwargs: dict[str, Any] = {
            "paths": _absolute(paths),
            "crop": crop,
            "flips": flips,
            "channels": channels if channels is not None else explicit.get("channels"),
            "val_paths": None if val_paths is None else _absolute(val_paths),
            "object_size": object_size,
            "skip_bad": skip_bad,
        }
        kwargs.update(_data_kwargs(IMAGES_DATASET, data_raw))
        _set_num_train(kwargs, num_train, data_raw)
        num_test = num_test or DEFAULT_NUM_VAL
        train_set = build_dataset(IMAGES_DATASET, "train", kwargs)  # checks paths, crop and object size
        build_dataset(IMAGES_DATASET, "val", {**kwargs, "num_scenes": num_test})
        kwargs.update(crop=tuple(train_set.crop_size), channels=train_set.channels)
        model_config = dict(explicit)
        if object_size is not None:
            derived = object_size_overrides(model, object_size, train_set.crop_size, overrides=explicit)
            sized = replace_config(model_class.config_class(), derived)
            model_config = {key: getattr(sized, key) for key in derived}
            if info is not None:
                set_here = [f"{k}={_text(model_config[k])}" for k in derived if k not in explicit]
                info(f"object size {object_size:g} px sets {' '.join(set_here) or 'nothing'}")
        model_config["channels"] = train_set.channels
        train = _train_settings(train_raw, seed=seed, steps=steps, minutes=minutes, device=device)
        return cls(
            model=model,
            model_config=model_config,
            dataset=IMAGES_DATASET,
            data_kwargs=kwargs,
            train=train,
            num_test=num_test,
        )

    @classmethod
    def from_run_dir(cls, run_dir: str | os.PathLike, require_data: bool = True) -> RunSpec:
        """The spec a run directory was trained with (its ``config.json``).

        A run whose config names no data (trained from Python without ``run_info``) gets the model's
        default generator, unless ``require_data``.

        Raises:
            RunDirError: when the directory or its config is missing or corrupt.
        """
        config = read_config(run_dir)
        data = config.get("data")
        if not isinstance(data, dict) or "name" not in data:
            if require_data:
                raise RunDirError(
                    f"{Path(run_dir) / CONFIG_FILE} does not say which data the run was trained on"
                )
            model_class = MODELS.get(config["model"])
            defaults = dict(model_class.default_data_kwargs) if model_class is not None else {}
            data = {"name": "", "kwargs": defaults}
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        try:
            return cls(
                model=config["model"],
                model_config=dict(config.get("model_config") or {}),
                dataset=data["name"],
                data_kwargs=_from_json(data.get("kwargs", {})),
                train={k: v for k, v in (config.get("train_config") or {}).items() if k in fields},
                num_test=data.get("num_test") or DEFAULT_NUM_TEST,
                data_root=data.get("root"),
                preset=config.get("preset"),
            )
        except ValueError as err:
            raise RunDirError(f"{Path(run_dir) / CONFIG_FILE}: {err}") from None

    @classmethod
    def from_pretrained(cls, name: str) -> RunSpec:
        """The spec of pretrained model ``name`` (:func:`ppl_scenes.zoo.pretrained_info`): its model,
        config and scenes, so that its test and validation scenes can be rebuilt."""
        return cls.from_card(pretrained_info(name))

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> RunSpec:
        """The spec of a model card (:func:`ppl_scenes.zoo.pretrained_info`'s dict): model, config and
        scenes."""
        return cls(
            model=card["model"],
            model_config=dict(card["model_config"]),
            dataset=card["dataset"],
            data_kwargs=_from_json(card["data_kwargs"]),
            preset=card["preset"],
        )

    def continued(
        self,
        overrides: Sequence[str] = (),
        *,
        dataset: str | None = None,
        num_train: int | None = None,
        num_test: int | None = None,
        seed: int | None = None,
        steps: int | None = None,
        minutes: float | None = None,
        device: str | None = None,
        data_root: str | None = None,
        images: dict[str, Any] | None = None,
    ) -> RunSpec:
        """This (stored) run, resumed: the budget, device and training settings may change; the model,
        data and seed may only be repeated (each value that differs is named, with the run's).

        ``images``: the image options given again (``paths`` and any other argument of
        :meth:`for_images` but ``overrides``); each must be the run's.

        ``steps`` alone extends the run to that step whatever its minutes budget was; ``minutes``
        alone (or ``train.minutes=``) to that many minutes in all whatever its steps were (no step
        limit, as a new run's minutes budget: :func:`ppl_scenes.infer.fit.train_config`).
        """
        model_raw, train_raw, data_raw = split_overrides(overrides)
        differ = []
        own = replace_config(self.model_class.config_class(), self.model_config)
        for key, value in coerced_fields(own, model_raw, "model config").items():
            if value != getattr(own, key):
                differ.append(f"{key}={model_raw[key]} (the run has {getattr(own, key)!r})")
        for key, text in data_raw.items():
            if parse_value(text) != self.data_kwargs.get(key):
                differ.append(f"data.{key}={text} (the run has {self.data_kwargs.get(key)!r})")
        if dataset is not None and dataset != self.dataset:
            differ.append(f"--dataset {dataset} (the run has {self.dataset!r})")
        if num_train is not None and num_train != self.data_kwargs.get("num_scenes"):
            differ.append(f"--num-train {num_train} (the run has {self.data_kwargs.get('num_scenes')!r})")
        run_seed = self.train.get("seed", TrainConfig.seed)
        for flag, given in (("--seed", seed), ("train.seed", train_raw.get("seed"))):
            if given is not None and int(given) != run_seed:
                differ.append(f"{flag} {given} (the run has {run_seed})")
        if images is not None and self.dataset != IMAGES_DATASET:
            differ.append(f"image files (the run was trained on {self.dataset!r})")
        elif images is not None:
            for key, value in images.items():
                if _image_arg(key, value) != _image_arg(key, self.data_kwargs.get(key)):
                    differ.append(f"{key}={value!r} (the run has {self.data_kwargs.get(key)!r})")
        if differ:
            listed = "; ".join(differ)
            raise ValueError(f"a resumed run keeps its model, data and seed; these differ: {listed}")
        train = {**self.train, **coerced_fields(TrainConfig(), train_raw, "training")}
        if steps is not None:
            train["minutes"] = 0.0  # --steps N on resume: go on to step N, whatever the old budget
        train.update(_given(steps=steps, minutes=minutes, device=device))
        new_minutes = minutes is not None or "minutes" in train_raw
        if new_minutes and steps is None and "steps" not in train_raw and train.get("minutes"):
            train["steps"] = 0  # --minutes M on resume: go on to M minutes in all, whatever the steps
        return dataclasses.replace(
            self,
            train=train,
            num_test=num_test or self.num_test,
            data_root=data_root if data_root is not None else self.data_root,
        )

    def to_json(self) -> dict[str, Any]:
        """The spec as ``config.json`` records it (the ``data`` entry the trainer stores beside the model)."""
        return {
            "model": self.model,
            "preset": self.preset,
            "model_config": dict(self.model_config),
            "train": dict(self.train),
            "data": {
                "name": self.dataset,
                "kwargs": _json_ready(self.data_kwargs),
                "num_test": self.num_test,
                "root": self.data_root,
            },
        }

    def build_model(self) -> SceneModel:
        """The model, its weights drawn from the run's seed."""
        pyro.set_rng_seed(self.seed)
        return self.model_class(replace_config(self.model_class.config_class(), self.model_config))

    def test_set(self, dataset: str | None = None, num_test: int | None = None):
        """``(name, scenes)``: the run's own test split, or generator ``dataset``'s with its defaults.

        An images run's own "test" scenes are its validation crops (its images carry no labels).
        """
        if dataset is None or dataset == self.dataset:
            split = "val" if self.dataset == IMAGES_DATASET else "test"
            return self.dataset, self.build_dataset(split, num_test)
        cls = self.model_class
        kwargs = dict(cls.default_data_kwargs) if dataset == cls.default_dataset else {}
        kwargs["num_scenes"] = num_test or DEFAULT_NUM_TEST
        return dataset, build_dataset(dataset, "test", self._seeded(dataset, kwargs), self.data_root)

    def build_dataset(self, split: str, num_scenes: int | None = None):
        """The generator's ``split`` (``"train"``: its arguments; ``"val"``, ``"test"``: ``num_test`` scenes).

        Scenes follow the run's seed (``--seed``) unless ``data.seed`` fixes them: a seed-1 run
        trains, validates and is tested on scenes of its own (BENCHMARKS.md's protocol).
        """
        kwargs = dict(self.data_kwargs)
        if split != "train":
            kwargs["num_scenes"] = num_scenes or self.num_test
        return build_dataset(self.dataset, split, self._seeded(self.dataset, kwargs), self.data_root)

    @property
    def seed(self) -> int:
        """The run's seed: weights, batch order and, unless ``data.seed`` is given, its scenes."""
        return int(self.train.get("seed", self.model_class.default_train.get("seed", TrainConfig.seed)))

    def _seeded(self, dataset: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        named, open_ended = _builder_params(dataset)
        if "seed" not in kwargs and ("seed" in named or open_ended) and dataset != IMAGES_DATASET:
            kwargs = {**kwargs, "seed": self.seed}
        return kwargs

    # -- training --------------------------------------------------------------------------------------
    def train_into(
        self,
        out: str | os.PathLike,
        resume: bool = False,
        progress: bool = True,
        command: str | None = None,
        info: Callable[[str], None] | None = None,
        train_set=None,
        model: SceneModel | None = None,
        evaluate: bool = True,
        eval_fn: Callable[[SceneModel], dict[str, Any]] | None = None,
        run_info: dict[str, Any] | None = None,
    ) -> TrainedRun:
        """Train into run directory ``out`` (new, or ``resume`` its checkpoint), then score the test split.

        The final scores (with ``dataset``, the generator's name) are in ``out/eval.json``: for an images
        run those of :func:`evaluate_scenes` on its validation crops (ELBO and counts per image).

        Args:
            out: the run directory.
            resume: continue its checkpoint.
            progress: progress bars.
            command: the command line, recorded in ``config.json``.
            info: called with a status line before training.
            train_set: scenes to train on instead of the generator's training split (an experiment's
                own stream, say); ``config.json`` still records the spec's data unless ``run_info``
                says otherwise.
            model: a new run's model, built already (e.g. with weights of its own) instead of
                :meth:`build_model`; it must match the spec.
            evaluate: score the test split during and after training into ``eval.json`` and
                ``metrics`` (``eval_fn`` instead, if given: ``eval.json`` holds its final result and
                ``metrics`` stays empty; neither when False).
            eval_fn: ``eval_fn(model) -> dict`` in place of the test-split scores.
            run_info: entries for ``config.json`` on top of the spec's ``data`` and ``command``.

        Raises:
            RunDirError: when ``out`` cannot be used; ValueError: on bad settings or data;
            TrainingDiverged: after too many non-finite steps in a row.
        """
        out = Path(out)
        if resume:
            stored = read_config(out)
            if stored["model"] != self.model:
                raise ValueError(f"{str(out)!r} holds a {stored['model']!r} run, not {self.model!r}")
            try:
                model = build_model(self.model, self.model_config)
            except ValueError as err:
                raise RunDirError(f"{out / CONFIG_FILE}: {err}") from None
        else:
            RunDir(out).check_new()
            if model is None:
                model = self.build_model()
            elif model.name != self.model:
                raise ValueError(f"the spec is of {self.model!r} but the model given is {model.name!r}")
        train_set = self.build_dataset("train") if train_set is None else train_set
        own_scores = evaluate and eval_fn is None
        test_set = self.test_set()[1] if own_scores else None
        if own_scores:
            eval_fn = lambda m: evaluate_scenes(m, test_set, progress=progress)  # noqa: E731
        run_info = {"data": self.to_json()["data"], "command": command, **(run_info or {})}
        if self.preset is not None:
            run_info.setdefault("preset", self.preset)
        if info is not None:
            info(f"training {self.model} on {len(train_set)} {self.dataset!r} scenes -> {out}")
        start = time.perf_counter()
        fit(
            model,
            train_set,
            out=out,
            resume=resume,
            eval_fn=eval_fn if evaluate else None,
            progress=progress,
            run_info=run_info,
            **self.train,
        )
        seconds = time.perf_counter() - start
        metrics = {}
        from ppl_scenes.infer.distributed import is_main_process  # torchrun: rank 0 alone writes

        if own_scores and is_main_process():
            run = RunDir(out)
            metrics = {"dataset": self.dataset, **run.read_eval()}
            run.write_eval(metrics)
        return TrainedRun(model, test_set, metrics, seconds)


def evaluate_scenes(model: SceneModel, scenes, progress: bool = False) -> dict[str, Any]:
    """``model.evaluate(scenes)`` on labelled scenes; on unlabelled image crops
    (:class:`~ppl_scenes.data.ImageFolderScenes`) :func:`~ppl_scenes.files.evaluate_unlabelled`: the
    ELBO per image, the counts per image and the reconstruction error."""
    if isinstance(scenes, ImageFolderScenes):
        return evaluate_unlabelled(model, scenes, progress=progress)
    return model.evaluate(scenes, progress=progress)


def _check_object_model(model: str) -> None:
    """Refuse image-level models (``saccade``, ``resnet``): image files teach them no objects."""
    if issubclass(MODELS[model], ImageLevel):
        raise ObjectSizeNotApplicable(
            f"{model!r} cannot learn objects from image files: it is an image-level model with no "
            "object scale to set (its glimpses are fractions of the image)"
        )


def _registered(model: str) -> type[SceneModel]:
    """The registered class of ``model``; a ValueError naming the known ones otherwise."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; known models: {', '.join(sorted(MODELS))}")
    return MODELS[model]


def _set_num_train(kwargs: dict[str, Any], num_train: int | None, data_raw: dict[str, str]) -> None:
    """``--num-train`` as the generator's ``num_scenes`` (refused beside ``data.num_scenes``)."""
    if num_train is not None:
        if "num_scenes" in data_raw:
            raise ValueError("give either --num-train or data.num_scenes, not both")
        kwargs["num_scenes"] = num_train


def _train_settings(train_raw: dict[str, str], **given: Any) -> dict[str, Any]:
    """``train.KEY=VALUE`` text as typed TrainConfig fields, with the flags that were given on top."""
    return {**coerced_fields(TrainConfig(), train_raw, "training"), **_given(**given)}


def _absolute(paths: object) -> list[str]:
    """Paths (one or a list) made absolute, ``~`` expanded; globs and ``file.npy::3`` names kept as such."""
    items = [paths] if isinstance(paths, str | os.PathLike) else paths
    if not isinstance(items, Sequence) or not items:
        raise ValueError(f"paths must be a path or a non-empty list of paths, got {paths!r}")
    return [os.path.abspath(os.path.expanduser(os.fspath(p))) for p in items]


def _image_arg(key: str, value: Any) -> Any:
    """An image option as the run records it (absolute paths, crop ``(H, W)``), for comparison."""
    if value is None:
        return None
    if key in ("paths", "val_paths"):
        return tuple(_absolute(value))
    if key == "crop":
        return (value, value) if isinstance(value, int) else tuple(value)
    return value


def _text(value: Any) -> str:
    """A config value as ``KEY=VALUE`` text (``(12, 12)`` -> ``12,12``)."""
    if isinstance(value, tuple):
        return ",".join(map(_text, value))
    return f"{value:g}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def _given(**values: Any) -> dict[str, Any]:
    """The keyword arguments that were given (not None)."""
    return {k: v for k, v in values.items() if v is not None}
