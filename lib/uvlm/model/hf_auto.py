"""The decoder under transformers' Auto classes (model_type ``uvlm``).

    import uvlm
    from transformers import AutoConfig, AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained("data/runs/ug_base/seed0/best_u")  # a uvlm.model.decoder.UVLM
    AutoConfig.from_pretrained("data/runs/ug_base/seed0/best_u").model_type          # 'uvlm'

``UVLM.save_pretrained`` writes ``model_type`` into config.json; loading goes through
``UVLM.from_pretrained``, which reads model.safetensors only (nothing is unpickled). The model
is the project's own ``nn.Module``, not a ``PreTrainedModel``: it generates through
:mod:`uvlm.model.generate`, and its forward takes a layer plan.

Registration waits until transformers' Auto modules are imported. Importing them costs seconds
and pulls in torch (the reason text_tokenizer.py avoids AutoTokenizer), and ``import uvlm``
runs in every stage and worker process, most of which never touch the Auto classes. So
``import uvlm`` only installs an import hook (:func:`install`): whichever comes first, uvlm or
transformers, the Auto classes know ``uvlm`` by the time a program can call them.
"""
from __future__ import annotations

import dataclasses
import importlib.abc
import sys
from pathlib import Path

CONFIG_AUTO = "transformers.models.auto.configuration_auto"
MODEL_AUTO = "transformers.models.auto.modeling_auto"
# What AutoModelForCausalLM.from_pretrained hands the model class besides the path. A local
# checkpoint needs none of them; they are accepted so that the Auto call works as for any model.
HUB_KWARGS = frozenset({"cache_dir", "force_download", "local_files_only", "proxies", "revision", "token",
                        "subfolder", "trust_remote_code", "adapter_kwargs", "_from_auto", "code_revision"})
LOAD_KWARGS = ("plan", "image_proj_sets", "device")  # UVLM.from_pretrained's own

_config_class = None


def config_class():
    """The ``PretrainedConfig`` of model_type ``uvlm``: the fields of :class:`uvlm.model.decoder.UVLMConfig`."""
    global _config_class
    if _config_class is None:
        from transformers import PretrainedConfig

        from .decoder import MODEL_TYPE, UVLMConfig

        defaults = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
                    for f in dataclasses.fields(UVLMConfig)}

        class UVLMHFConfig(PretrainedConfig):
            model_type = MODEL_TYPE

            def __init__(self, **kwargs):
                for name, default in defaults.items():
                    setattr(self, name, kwargs.pop(name, default))
                super().__init__(**kwargs)

            def uvlm_config(self) -> UVLMConfig:
                """The model's own config, checked by every field rule."""
                from uvlm.core import schema
                return schema.build(UVLMConfig, {n: getattr(self, n) for n in defaults}, prefix="model")

        UVLMHFConfig.__module__ = __name__
        UVLMHFConfig.__qualname__ = "UVLMHFConfig"
        _config_class = UVLMHFConfig
        UVLMForCausalLM.config_class = UVLMHFConfig
    return _config_class


class UVLMForCausalLM:
    """What ``AutoModelForCausalLM`` builds for model_type ``uvlm``: a :class:`uvlm.model.decoder.UVLM`."""
    config_class = None  # set with the config class (transformers' register checks the pair)

    @classmethod
    def from_pretrained(cls, path, *model_args, config=None, **kwargs):
        unknown = sorted(set(kwargs) - HUB_KWARGS - set(LOAD_KWARGS))
        if model_args or unknown:
            raise TypeError(f"a uvlm checkpoint takes no {list(model_args) + unknown}; "
                            f"its keyword arguments are {list(LOAD_KWARGS)}")
        from .decoder import UVLM
        path = Path(path) / (kwargs.get("subfolder") or "")
        model = UVLM.from_pretrained(path, plan=kwargs.get("plan"), image_proj_sets=kwargs.get("image_proj_sets", ()),
                                     device=kwargs.get("device", "cpu"))
        # The weights are read with the checkpoint's own config.json: another config cannot apply.
        if config is not None and config.uvlm_config() != model.config:
            raise ValueError(f"config= differs from the checkpoint's {path / 'config.json'}; "
                             "edit the checkpoint's config, or leave config= out")
        return model


def _register_config(module) -> None:
    hf_config = config_class()
    module.AutoConfig.register(hf_config.model_type, hf_config, exist_ok=True)


def _register_model(module) -> None:
    module.AutoModelForCausalLM.register(config_class(), UVLMForCausalLM, exist_ok=True)


_HOOKS = {CONFIG_AUTO: _register_config, MODEL_AUTO: _register_model}


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it wraps the loader of transformers' two Auto modules, so that each
    registers ``uvlm`` as soon as it has run."""

    def find_spec(self, name, path=None, target=None):
        hook = _HOOKS.get(name)
        if hook is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            hook(module)

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    """Register now where transformers' Auto modules are loaded already, and on their import otherwise."""
    if not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())
    for name, hook in _HOOKS.items():
        if name in sys.modules:
            hook(sys.modules[name])
