"""The configuration that points syncd at the built-in demo source.

One place for the demo entities' column mappings, used by `make run`, the tests and
the benchmark. `demo_config()` returns plain data to dump as YAML, so a caller can
change any key before writing the file."""

from __future__ import annotations

import copy
from typing import Any

import yaml

# column: (source field, PostgreSQL type), per demo entity
DEMO_ENTITIES: dict[str, dict[str, Any]] = {
    "task": {
        "path": "/api/TaskDetails/GetTaskDetailsListForSync",
        "table": "task_details",
        "primary_key": ["task_id"],
        "columns": {
            "task_id": ("TaskId", "bigint"),
            "title": ("Title", "text"),
            "description": ("Description", "text"),
            "status": ("Status", "text"),
            "priority": ("Priority", "integer"),
            "assignee_id": ("AssigneeId", "bigint"),
            "entity_id": ("EntityId", "uuid"),
            "inspection_id": ("InspectionId", "bigint"),
            "due_date": ("DueDate", "date"),
            "estimate_hours": ("EstimateHours", "numeric"),
            "is_billable": ("IsBillable", "boolean"),
            "tags": ("Tags", "jsonb"),
            "site_name": ("Location.Site.Name", "text"),
            "latitude": ("Location.Lat", "double precision"),
            "created_on": ("CreatedOn", "timestamp"),
            "modified_on": ("ModifiedOn", "timestamptz"),
        },
        "version_column": "modified_on",
    },
    "inspection": {
        "path": "/api/InspectionDetails/GetInspectionDetailsListForSync",
        "table": "inspection_details",
        "primary_key": ["inspection_id"],
        "columns": {
            "inspection_id": ("InspectionId", "bigint"),
            "task_id": ("TaskId", "bigint"),
            "inspector_id": ("InspectorId", "bigint"),
            "result": ("Result", "text"),
            "score": ("Score", "numeric"),
            "notes": ("Notes", "text"),
            "checklist": ("Checklist", "jsonb"),
            "is_final": ("IsFinal", "boolean"),
            "inspected_on": ("InspectedOn", "timestamptz"),
            "modified_on": ("ModifiedOn", "timestamptz"),
        },
        "version_column": "modified_on",
    },
    "user": {
        "path": "/api/UserDetails/GetUserDetailsListForSync",
        "table": "user_details",
        "primary_key": ["user_id"],
        "columns": {
            "user_id": ("UserId", "bigint"),
            "email": ("Email", "text"),
            "display_name": ("DisplayName", "text"),
            "role": ("Role", "text"),
            "is_active": ("IsActive", "boolean"),
            "manager_id": ("Manager.UserId", "bigint"),
            "last_login_on": ("LastLoginOn", "timestamptz"),
            "modified_on": ("ModifiedOn", "timestamptz"),
        },
        "version_column": "modified_on",
    },
    "entity": {
        "path": "/api/EntityDetails/GetEntityDetailsListForSync",
        "table": "entity_details",
        "primary_key": ["entity_id"],
        "columns": {
            "entity_id": ("EntityId", "uuid"),
            "name": ("Name", "text"),
            "kind": ("Kind", "text"),
            "parent_id": ("ParentId", "uuid"),
            "city": ("Address.City", "text"),
            "address": ("Address", "jsonb"),
            "is_archived": ("IsArchived", "boolean"),
            "modified_on": ("ModifiedOn", "timestamptz"),
        },
        "version_column": "modified_on",
    },
}


def demo_config(
    dsn: str,
    base_url: str,
    *,
    entities: list[str] | None = None,
    initial_from: str = "2000-01-01 00:00:00",
    listen: str = "127.0.0.1:9188",
) -> dict[str, Any]:
    """A full configuration for the demo source at `base_url`, as plain data."""
    chosen = entities or list(DEMO_ENTITIES)
    config: dict[str, Any] = {
        "database": {"dsn": dsn},
        "http": {"listen": listen},
        "source": {"timeout": "10s", "page_size": 1000},
        "scheduler": {"max_concurrent": 4},
        "entities": {},
    }
    for name in chosen:
        spec = DEMO_ENTITIES[name]
        config["entities"][name] = {
            "url": base_url.rstrip("/") + spec["path"],
            "table": spec["table"],
            "primary_key": list(spec["primary_key"]),
            "columns": {
                column: {"field": field, "type": col_type}
                for column, (field, col_type) in spec["columns"].items()
            },
            "version_column": spec["version_column"],
            "schedule": {"every": "10s"},
            "window": {"lookback": "1m", "lag": "0s", "max": "1d", "initial_from": initial_from},
        }
    return copy.deepcopy(config)


def dump(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False)
