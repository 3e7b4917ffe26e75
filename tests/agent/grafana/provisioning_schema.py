"""The schema we hold Grafana's provisioning files to (Grafana 11, docs "Provision Grafana" and "Provision alerting
resources"), as strict models: a key Grafana does not know, or a wrong type, fails validation."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _S(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Datasource(_S):
    name: str
    uid: str = Field(min_length=1, max_length=40)
    orgId: int = Field(1, ge=1)
    type: Literal["influxdb"]
    access: Literal["proxy"]
    url: str
    isDefault: bool
    editable: bool
    user: str = Field(pattern=r"^\$[A-Z_][A-Z0-9_]*$")  # an environment variable, never a value
    jsonData: dict[str, Any]
    secureJsonData: dict[str, str]


class DatasourcesFile(_S):
    apiVersion: Literal[1]
    deleteDatasources: list[dict[str, Any]]
    datasources: list[Datasource]


class ProviderOptions(_S):
    path: str = Field(pattern=r"^/")
    foldersFromFilesStructure: bool = False


class Provider(_S):
    name: str
    orgId: int
    folder: str
    type: Literal["file"]
    disableDeletion: bool
    allowUiUpdates: Literal[False]
    updateIntervalSeconds: int
    options: ProviderOptions


class ProvidersFile(_S):
    apiVersion: Literal[1]
    providers: list[Provider]


class RelativeTimeRange(_S):
    from_: int = Field(alias="from", gt=0)
    to: int


class Query(_S):
    refId: str
    datasourceUid: str
    model: dict[str, Any]
    relativeTimeRange: RelativeTimeRange | None = None


class Rule(_S):
    uid: str = Field(max_length=40, pattern=r"^[A-Za-z0-9_-]+$")
    title: str = Field(max_length=190)
    condition: str
    data: list[Query] = Field(min_length=1)
    noDataState: Literal["Alerting", "NoData", "OK"]
    execErrState: Literal["Alerting", "Error", "OK"]
    for_: str = Field(alias="for", pattern=r"^\d+[smh]$")
    isPaused: bool
    labels: dict[str, str]
    annotations: dict[str, str]


class RuleGroup(_S):
    orgId: int
    name: str
    folder: str
    interval: str = Field(pattern=r"^\d+[smh]$")
    rules: list[Rule] = Field(min_length=1)


class DeleteRule(_S):
    orgId: int
    uid: str = Field(max_length=40, pattern=r"^[A-Za-z0-9_-]+$")


class RulesFile(_S):
    apiVersion: Literal[1]
    groups: list[RuleGroup]
    deleteRules: list[DeleteRule] = []


class EmailSettings(_S):
    addresses: str = Field(min_length=3)
    singleEmail: bool
    subject: str
    message: str


class Receiver(_S):
    uid: str
    type: Literal["email"]
    disableResolveMessage: bool
    settings: EmailSettings


class ContactPoint(_S):
    orgId: int
    name: str
    receivers: list[Receiver]


class ContactPointsFile(_S):
    apiVersion: Literal[1]
    contactPoints: list[ContactPoint]


class Policy(_S):
    orgId: int
    receiver: str
    group_by: list[str]
    group_wait: str
    group_interval: str
    repeat_interval: str


class PoliciesFile(_S):
    apiVersion: Literal[1]
    policies: list[Policy]


class Template(_S):
    orgId: int
    name: str
    template: str


class TemplatesFile(_S):
    apiVersion: Literal[1]
    templates: list[Template]


SCHEMAS: dict[str, type[BaseModel]] = {
    "datasources/fieldstation.yaml": DatasourcesFile,
    "dashboards/fieldstation.yaml": ProvidersFile,
    "alerting/fieldstation-rules.yaml": RulesFile,
    "alerting/fieldstation-contact-points.yaml": ContactPointsFile,
    "alerting/fieldstation-policies.yaml": PoliciesFile,
    "alerting/fieldstation-templates.yaml": TemplatesFile,
}
