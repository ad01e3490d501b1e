"""Run configuration: a TOML file, then `--key=value` overrides, type-checked once into a frozen dataclass.

RunConfig (fields.py) is the single source of truth for every option: its fields are the TOML keys and the
command-line overrides, and each carries its help, which `loralab train --help` prints by section
(describe.py). loading.py reads and type-checks, validation.py checks choices and ranges and fills in the
task's defaults. The choices of task, method, model_kind, bias, init and code_eval_isolation and the tasks'
defaults are declared by the layers that own them; registries.py reads them from those modules' source.

config is the lowest layer with errors, files and hub: it may import only those, and loralab.lora.config
(LoRAConfig, which imports nothing but errors) for RunConfig.lora_config; never the layers above.
"""

from loralab.config.describe import describe_options, field_help
from loralab.config.fields import RunConfig, field_types
from loralab.config.loading import config_from_dict, load_config, read_run_config
from loralab.config.registries import BUILTIN_DATASETS, FAMILY_OF, TASK_DEFAULTS
from loralab.config.validation import CHOICES, NON_NEGATIVE, POSITIVE, family, validate, with_task_defaults

__all__ = [
    "BUILTIN_DATASETS",
    "CHOICES",
    "FAMILY_OF",
    "NON_NEGATIVE",
    "POSITIVE",
    "TASK_DEFAULTS",
    "RunConfig",
    "config_from_dict",
    "describe_options",
    "field_help",
    "family",
    "field_types",
    "load_config",
    "read_run_config",
    "validate",
    "with_task_defaults",
]
