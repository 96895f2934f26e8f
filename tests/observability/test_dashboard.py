"""The Grafana dashboard's structure: the required panels, the job variable wired into every
trainer query, and a layout without overlaps."""

from __future__ import annotations

from obs_promql import dashboard, dashboard_exprs

REQUIRED_PANELS = ["Loss", "Learning rate", "Throughput", "Top-1 / top-5 accuracy", "Jobs by state"]


def panels() -> list[dict]:
    out = []
    for p in dashboard()["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def test_required_panels_exist() -> None:
    titles = [p["title"] for p in panels()]
    for title in REQUIRED_PANELS:
        assert title in titles


def test_job_and_namespace_variables() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert {"datasource", "namespace", "job"} <= set(variables)
    assert variables["job"]["includeAll"] and variables["job"]["multi"]
    assert "$namespace" in variables["job"]["query"]["query"]  # job list follows the namespace


def test_every_trainer_query_is_filtered_by_job() -> None:
    for where, expr in dashboard_exprs().items():
        if "mnv2_trainer_" in expr and where.startswith("panel"):
            for selector in expr.split("mnv2_trainer_")[1:]:
                body = selector.split("}")[0]
                assert 'job=~"$job"' in body and 'namespace=~"$namespace"' in body, (where, expr)


def test_every_panel_uses_the_datasource_variable_and_has_unique_ids() -> None:
    ps = panels()
    assert len({p["id"] for p in ps}) == len(ps)
    for p in ps:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            assert p["targets"], p["title"]


def test_layout_has_no_overlaps_and_fits_the_grid() -> None:
    boxes = [(p["title"], p["gridPos"]) for p in panels()]
    for title, g in boxes:
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, title
    for i, (a, ga) in enumerate(boxes):
        for b, gb in boxes[i + 1 :]:
            overlap_x = ga["x"] < gb["x"] + gb["w"] and gb["x"] < ga["x"] + ga["w"]
            overlap_y = ga["y"] < gb["y"] + gb["h"] and gb["y"] < ga["y"] + ga["h"]
            assert not (overlap_x and overlap_y), (a, b)


def test_job_level_counters_are_not_summed_over_ranks() -> None:
    """Every rank reports the whole job's images, so summing ranks would multiply the throughput."""
    from obs_promql import alert_exprs

    for where, expr in {**dashboard_exprs(), **alert_exprs()}.items():
        for name in ("mnv2_trainer_images_total", "mnv2_trainer_images_per_second"):
            if name in expr:
                assert f"sum by (namespace, job) (rate({name}" not in expr, where
                assert f"sum by (namespace, job) ({name}" not in expr, where
