"""`senet list`: the architectures and the catalogue, as printed, agree with the tables."""

import json

import pytest

import senet
from cli_runner import run, run_subprocess
from senet import catalogue


def test_list_architectures_json_matches_the_table():
    r = run("list", "--json")
    assert r.returncode == 0, r.stderr
    rows = {x["model"]: x for x in map(json.loads, r.stdout.splitlines())}
    assert list(rows) == list(senet.VARIANTS)
    for name, row in rows.items():
        v = senet.VARIANTS[name]
        assert row["params"] == v.params and row["gmacs_224"] == v.macs / 1e9
        assert row["tags"] == [e.tag for e in catalogue.tags(name)]
    # Table 2 of the SENet paper (multiply-adds): SE-ResNet-50 3.87, SE-ResNeXt-50 4.25,
    # SE-BN-Inception 2.04 GFLOPs.
    for name, paper in (("se_resnet50", 3.87), ("se_resnext50_32x4d", 4.25),
                        ("se_bn_inception", 2.04)):
        assert rows[name]["gmacs_224"] == pytest.approx(paper, rel=0.02), name
    assert rows["seresnextaa201d_32x8d"]["best_top1"] == 87.304


def test_list_pretrained_json_matches_the_catalogue():
    r = run("list", "--pretrained", "--json")
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["name"] for x in rows] == list(catalogue.CATALOGUE)
    by_name = {x["name"]: x for x in rows}
    e = by_name["seresnet152d.ra2_in1k"]
    assert (e["eval_size"], e["eval_crop_pct"], e["interpolation"], e["top1"]) == (
        320, 1.0, "bicubic", 84.344)
    assert by_name["se_resnet50.caffe_in1k"]["default"] is True
    assert by_name["seresnet50.a2_in1k"]["default"] is False
    assert by_name["seresnextaa101d_32x8d.sw_in12k"]["classes"] == "imagenet-12k"
    assert by_name["se_bn_inception.caffe_in1k"]["source"] == "convert by hand"


def test_list_text_is_instant_and_readable():
    """The smoke test: a fresh interpreter prints both tables without importing Keras."""
    r = run_subprocess("list")
    assert r.returncode == 0, r.stderr
    assert "SENet154" in r.stdout and "seresnextaa201d_32x8d" in r.stdout
    r = run("list", "--pretrained")
    assert "seresnet50.a1_in1k *" in r.stdout and "84.34" in r.stdout
