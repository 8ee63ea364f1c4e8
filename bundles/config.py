"""The TF Serving ModelServerConfig (text format) of the bundle, from rows: no TensorFlow, no protobuf.

One ``config`` per ``{team}.{backbone name}``: its base path holds one numbered folder per ready
assembly (the version is the assembly id), and ``version_labels`` map each current alias name to
the ready assembly that alias resolved to most recently (``resolved_at``). TF Serving refuses a
label on a version it has not loaded, so the version policy lists exactly the labelled versions and the newest one.
"""

from dataclasses import dataclass, field


@dataclass
class ServedModel:
    """One TF Serving model: a team's backbone name, its ready assembly ids and its alias labels."""

    name: str
    versions: list[int] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)

    @property
    def loaded_versions(self) -> list[int]:
        return sorted({*self.labels.values(), *(self.versions[-1:])})


def served_models(assemblies, *, alias_names_by_team: dict[int, set[str]]) -> list[ServedModel]:
    """Group ready assemblies (oldest first) into served models; label aliases that still exist."""
    models: dict[str, ServedModel] = {}
    labelled: dict[tuple[str, str], tuple] = {}
    for assembly in assemblies:
        name = f"{assembly.team.slug}.{assembly.backbone.name}"
        model = models.setdefault(name, ServedModel(name=name))
        model.versions.append(assembly.pk)
        alias = (assembly.resolved_from or {}).get("alias")
        if alias and alias in alias_names_by_team.get(assembly.team_id, set()):
            # The assembly the alias resolved to most recently wins (an alias moved back to earlier
            # heads reuses an older row); rows without resolved_at rank by id, below the others.
            moment = getattr(assembly, "resolved_at", None)
            key = (moment is not None, moment.timestamp() if moment is not None else 0.0, assembly.pk)
            if key > labelled.get((name, alias), (False, 0.0, 0)):
                labelled[(name, alias)] = key
                model.labels[alias] = assembly.pk
    return [models[name] for name in sorted(models)]


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def model_server_config(models: list[ServedModel], *, base_path: str) -> str:
    """Return the ModelServerConfig text of `models` (each under `base_path`/<name>)."""
    lines = [
        "# Written by ModelHub (bundles): one model per team backbone, one version per ready assembly.",
        "model_config_list {",
    ]
    for model in models:
        lines += [
            "  config {",
            f"    name: {_quoted(model.name)}",
            f"    base_path: {_quoted(f'{base_path}/{model.name}')}",
        ]
        lines += ['    model_platform: "tensorflow"', "    model_version_policy {", "      specific {"]
        lines += [f"        versions: {version}" for version in model.loaded_versions]
        lines += ["      }", "    }"]
        for label, version in sorted(model.labels.items()):
            lines += ["    version_labels {", f"      key: {_quoted(label)}", f"      value: {version}", "    }"]
        lines += ["  }"]
    lines.append("}")
    return "\n".join(lines) + "\n"
