"""The examples a user copies from say what the roles really do: ansible/inventory.example.yml sets every variable of
every role site.yml plays (each role's meta/argument_specs.yml) to its true default, or says on that line (or the line
above) why it differs with a ``# differs from the default: <why>`` comment; defaults/main.yml and
meta/argument_specs.yml agree; and every vault_* name the inventories use is listed in
group_vars/fieldstation/vault.example.yml.

A secret (``no_log: true`` in the spec) set to a bare "{{ vault_... }}" needs no marker: its default is empty and
the preflight refuses an empty one, so the vault reference is the only value the example can show. Commented-out
lines are documentation, not settings: a variable counts only where it is set.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ANSIBLE = Path(__file__).resolve().parents[2] / "ansible"
EXAMPLE = ANSIBLE / "inventory.example.yml"
SHIPPED = ANSIBLE / "inventory.yml"
VAULT_EXAMPLE = ANSIBLE / "group_vars" / "fieldstation" / "vault.example.yml"
# The roles site.yml plays on the inventory's hosts: their variables are the inventory's. (A role only others include
# with their own values, such as apt_key, has parameters, not site variables.)
ROLES = sorted({
    role if isinstance(role, str) else role["role"]
    for play in yaml.safe_load((ANSIBLE / "site.yml").read_text())
    for role in play.get("roles", [])
})
MARKER = "# differs from the default:"
VAULT_REF = re.compile(r"^\{\{ *vault_\w+ *\}\}$")
VAULT_NAME = re.compile(r"\bvault_\w+")
# Variables an inventory sets that belong to no role: Ansible's own, and the Vagrant group's secrets folder.
NOT_ROLE_VARS = re.compile(r"^(ansible_|vagrant_)")


@cache
def spec(role: str) -> dict[str, dict[str, Any]]:
    data = yaml.safe_load((ANSIBLE / "roles" / role / "meta" / "argument_specs.yml").read_text())
    options: dict[str, dict[str, Any]] = data["argument_specs"]["main"]["options"]
    return options


@cache
def defaults(role: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ANSIBLE / "roles" / role / "defaults" / "main.yml").read_text()) or {}
    return data


@dataclass(frozen=True)
class Setting:
    value: Any
    line: int  # 0-based line of the key in the file


def settings(path: Path) -> dict[str, Setting]:
    """Every variable set in an inventory (any group's or host's vars), with the line of its key."""
    text = path.read_text()
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    found: dict[str, Setting] = {}

    def mapping(n: yaml.Node | None) -> dict[str, yaml.Node]:
        if not isinstance(n, yaml.MappingNode):
            return {}
        return {k.value: v for k, v in n.value if isinstance(k, yaml.ScalarNode)}

    def add_vars(n: yaml.Node | None) -> None:
        if not isinstance(n, yaml.MappingNode):
            return
        for key, value in n.value:
            assert key.value not in found, f"{path.name}: {key.value} is set twice (line {found[key.value].line + 1})"
            found[key.value] = Setting(yaml.safe_load(yaml.serialize(value)), key.start_mark.line)

    def group(n: yaml.Node | None) -> None:
        g = mapping(n)
        add_vars(g.get("vars"))
        for host in mapping(g.get("hosts")).values():
            add_vars(host)
        for child in mapping(g.get("children")).values():
            group(child)

    for top in mapping(node).values():
        group(top)
    return found


def role_of(var: str) -> str | None:
    return next((r for r in sorted(ROLES, key=len, reverse=True) if var.startswith(f"{r}_")), None)


def test_every_role_site_yml_plays_has_an_argument_spec() -> None:
    assert len(ROLES) >= 10
    assert [r for r in ROLES if not (ANSIBLE / "roles" / r / "meta" / "argument_specs.yml").exists()] == []


@pytest.mark.parametrize("role", ROLES)
def test_defaults_and_argument_specs_name_the_same_variables(role: str) -> None:
    assert sorted(spec(role)) == sorted(defaults(role)), (
        f"{role}: only in argument_specs: {sorted(set(spec(role)) - set(defaults(role)))}; "
        f"only in defaults/main.yml: {sorted(set(defaults(role)) - set(spec(role)))}"
    )


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_defaults_are_those_of_defaults_main(role: str) -> None:
    wrong = {
        name: (option["default"], defaults(role).get(name))
        for name, option in spec(role).items()
        if "default" in option and option["default"] != defaults(role).get(name)
    }
    assert wrong == {}, f"{role}: argument_specs default ≠ defaults/main.yml (spec, defaults): {wrong}"


@pytest.mark.parametrize("role", ROLES)
def test_the_example_sets_every_variable_of_the_role(role: str) -> None:
    missing = sorted(set(spec(role)) - set(settings(EXAMPLE)))
    assert missing == [], f"{EXAMPLE.name} does not document {role}'s {missing}"


def test_the_example_sets_no_variable_that_no_role_has() -> None:
    known = {name for role in ROLES for name in spec(role)}
    unknown = sorted(v for v in settings(EXAMPLE) if v not in known and not NOT_ROLE_VARS.match(v))
    assert unknown == [], f"{EXAMPLE.name} sets variables no role reads: {unknown}"


@pytest.mark.parametrize("role", ROLES)
def test_the_example_shows_the_default_or_says_why_not(role: str) -> None:
    lines = EXAMPLE.read_text().splitlines()
    example = settings(EXAMPLE)
    unexplained = []
    for name, option in spec(role).items():
        if name not in example:
            continue  # reported by test_the_example_sets_every_variable_of_the_role
        setting, default = example[name], defaults(role)[name]
        if setting.value == default:
            continue
        if option.get("no_log") and isinstance(setting.value, str) and VAULT_REF.match(setting.value):
            continue  # a secret: from the vault, its default is empty
        here = lines[setting.line]
        above = lines[setting.line - 1].strip() if setting.line else ""
        if MARKER not in here and not above.startswith(MARKER):
            unexplained.append(f"line {setting.line + 1}: {name}: {setting.value!r} (default {default!r})")
    assert unexplained == [], f"{EXAMPLE.name} differs from {role}'s defaults without a '{MARKER}' comment:\n" + (
        "\n".join(unexplained))


def test_the_markers_mark_real_differences() -> None:
    """A marker on a value that is the default would tell a user something false."""
    lines = EXAMPLE.read_text().splitlines()
    stale = []
    for name, setting in settings(EXAMPLE).items():
        role = role_of(name)
        if role is None or name not in defaults(role):
            continue
        above = lines[setting.line - 1].strip() if setting.line else ""
        marked = MARKER in lines[setting.line] or above.startswith(MARKER)
        if marked and setting.value == defaults(role)[name]:
            stale.append(name)
    assert stale == [], f"{EXAMPLE.name} says these differ from the default, but they do not: {stale}"


def vault_example() -> tuple[set[str], set[str]]:
    """(names vault.example.yml sets, names it shows in comments)."""
    text = VAULT_EXAMPLE.read_text()
    data = yaml.safe_load(text) or {}
    commented = set(re.findall(r"(?m)^#\s*(vault_\w+):", text))
    return set(data), commented


@pytest.mark.parametrize("inventory", [EXAMPLE, SHIPPED], ids=lambda p: p.name)
def test_every_vault_name_the_inventory_uses_is_in_the_vault_example(inventory: Path) -> None:
    defined, commented = vault_example()
    used = set(VAULT_NAME.findall(json.dumps(yaml.safe_load(inventory.read_text()))))  # comments left out
    mentioned = set(VAULT_NAME.findall(inventory.read_text())) - used  # in comments: examples a user may enable
    assert sorted(used - defined) == [], f"{inventory.name} uses these, which {VAULT_EXAMPLE.name} does not set"
    assert sorted(mentioned - defined - commented) == [], (
        f"{inventory.name} shows these in comments; {VAULT_EXAMPLE.name} does not list them")


def test_the_vault_example_holds_no_value() -> None:
    """Placeholders only: a copied example must be refused by the preflight, never work with a published secret."""
    values = yaml.safe_load(VAULT_EXAMPLE.read_text()) or {}
    assert values and all(v == "" for v in values.values()), values
    assert all(VAULT_NAME.fullmatch(k) for k in values), sorted(values)


def test_the_example_has_the_site_group_the_readme_limits_to() -> None:
    """README's command is `ansible-playbook ... --limit site`: the example must answer it as the shipped one does."""
    for inventory in (EXAMPLE, SHIPPED):
        data = yaml.safe_load(inventory.read_text())
        site = data["all"]["children"]["fieldstation"]["children"]["site"]
        assert site["hosts"], f"{inventory.name}: the site group has no host"
