"""The model configuration as models see it: lookups and auto-complete."""

from __future__ import annotations

import copy
import json


def get_input_config_by_name(model_config: dict, name: str) -> dict | None:
    for props in model_config.get("input", []):
        if props.get("name") == name:
            return props
    return None


def get_output_config_by_name(model_config: dict, name: str) -> dict | None:
    for props in model_config.get("output", []):
        if props.get("name") == name:
            return props
    return None


def using_decoupled_model_transaction_policy(model_config: dict) -> bool:
    policy = model_config.get("model_transaction_policy") or {}
    return bool(policy.get("decoupled", False))



class ModelConfig:
    """The configuration handed to `auto_complete_config`, with Triton's rules.

    Error texts are Triton's, word for word, so model authors see the same
    messages when a model's auto-complete clashes with config.pbtxt.
    """

    def __init__(self, model_config: dict | str) -> None:
        if isinstance(model_config, str):
            config = json.loads(model_config)
        else:
            config = copy.deepcopy(model_config)
        # Triton's core always fills these; a sparse dict from a test may not.
        config.setdefault("name", "")
        config.setdefault("max_batch_size", 0)
        config.setdefault("input", [])
        config.setdefault("output", [])
        self._model_config: dict = config

    def as_dict(self) -> dict:
        return self._model_config

    def set_max_batch_size(self, max_batch_size: int) -> None:
        # Triton's rule: a config value larger than the model's is refused.
        current = self._model_config["max_batch_size"]
        if current > max_batch_size:
            raise ValueError(
                f"configuration specified max_batch_size {current}, but in "
                f"auto-complete-config function for model '{self._name()}' specified "
                f"max_batch_size {max_batch_size}"
            )
        self._model_config["max_batch_size"] = max_batch_size

    def set_dynamic_batching(self) -> None:
        found = None
        if "sequence_batching" in self._model_config:
            found = "sequence_batching"
        elif "ensemble_scheduling" in self._model_config:
            found = "ensemble_scheduling"
        if found is not None:
            raise ValueError(
                f"Configuration specified scheduling_choice as '{found}', but "
                f"auto-complete-config function for model '{self._name()}' tries to set "
                "scheduling_choice as 'dynamic_batching'"
            )
        self._model_config.setdefault("dynamic_batching", {})

    def add_input(self, input: dict) -> None:  # "input": Triton's parameter name
        self._add_tensor("input", input, ("name", "data_type", "dims", "optional"))

    def add_output(self, output: dict) -> None:
        self._add_tensor("output", output, ("name", "data_type", "dims"))

    def set_model_transaction_policy(self, transaction_policy_dict: dict) -> None:
        for prop in transaction_policy_dict:
            if prop != "decoupled":
                raise ValueError(
                    "model transaction property in auto-complete-config function for "
                    f"model '{self._name()}' contains property other than 'decoupled'."
                )
        policy = self._model_config.setdefault("model_transaction_policy", {})
        if "decoupled" in transaction_policy_dict:
            wanted = transaction_policy_dict["decoupled"]
            if "decoupled" in policy and policy["decoupled"] != wanted:
                raise ValueError(
                    "trying to change decoupled property in auto-complete-config for "
                    f"model '{self._name()}', which is already set to "
                    f"'{policy['decoupled']}'."
                )
            policy["decoupled"] = wanted

    def _name(self) -> str:
        return str(self._model_config.get("name", ""))

    def _add_tensor(self, kind: str, tensor: dict, valid: tuple[str, ...]) -> None:
        model = self._name()
        label = tensor.get("name", "")
        for prop in tensor:
            if prop not in valid:
                allowed = (
                    "'name', 'data_type', 'dims' and 'optional'"
                    if "optional" in valid
                    else "'name', 'data_type' and 'dims'"
                )
                raise ValueError(
                    f"{kind} '{label}' in auto-complete-config function for model "
                    f"'{model}' contains property other than {allowed}."
                )
        if "name" not in tensor:
            raise ValueError(
                f"{kind} in auto-complete-config function for model '{model}' is missing "
                "'name' property."
            )
        for required in ("data_type", "dims"):
            if required not in tensor:
                raise ValueError(
                    f"{kind} '{label}' in auto-complete-config function for model "
                    f"'{model}' is missing '{required}' property."
                )
        for current in self._model_config.setdefault(kind, []):
            if current.get("name") != label:
                continue
            current_type = current.get("data_type", "TYPE_INVALID")
            current_dims = current.get("dims")
            if current_type != "TYPE_INVALID" and current_type != tensor["data_type"]:
                raise ValueError(
                    f"unable to load model '{model}', configuration expects datatype "
                    f"{current_type} for {kind} '{label}', model provides "
                    f"{tensor['data_type']}"
                )
            if current_dims and list(current_dims) != list(tensor["dims"]):
                raise ValueError(
                    f"model '{model}', tensor '{label}': the model expects dims "
                    f"{tensor['dims']} but the model configuration specifies dims "
                    f"{current_dims}"
                )
            if (
                "optional" in current
                and "optional" in tensor
                and current["optional"] != tensor["optional"]
            ):
                raise ValueError(
                    f"model '{model}', tensor '{label}': the model expects optional "
                    f"{tensor['optional']} but the model configuration specifies optional "
                    f"{current['optional']}"
                )
            current["data_type"] = tensor["data_type"]
            current["dims"] = tensor["dims"]
            if "optional" in tensor:
                current["optional"] = tensor["optional"]
            return
        self._model_config[kind].append(tensor)

