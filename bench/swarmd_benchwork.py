"""A worker that imports what a real one does (about 30 modules: stdlib and yaml) and then
works: each tenth of a second it builds and drops objects with reference cycles, so CPython's
collector runs in the node as it would in an app, and walks (writes to) every tracked object
of the generations it collects. Under preload, those writes are what unshares the pages the
node inherited; `work` reports once a second. Runs under swarmd and under the floor alike."""

from __future__ import annotations

import argparse  # noqa: F401
import asyncio  # noqa: F401
import collections  # noqa: F401
import concurrent.futures  # noqa: F401
import csv  # noqa: F401
import dataclasses  # noqa: F401
import datetime  # noqa: F401
import decimal  # noqa: F401
import email.mime.multipart  # noqa: F401
import fractions  # noqa: F401
import gzip  # noqa: F401
import hashlib  # noqa: F401
import http.client  # noqa: F401
import inspect  # noqa: F401
import ipaddress  # noqa: F401
import json
import logging.handlers  # noqa: F401
import pathlib  # noqa: F401
import pickle  # noqa: F401
import queue  # noqa: F401
import shutil  # noqa: F401
import sqlite3  # noqa: F401
import ssl  # noqa: F401
import statistics  # noqa: F401
import string  # noqa: F401
import tempfile  # noqa: F401
import textwrap  # noqa: F401
import typing  # noqa: F401
import urllib.request  # noqa: F401
import uuid  # noqa: F401
import xml.etree.ElementTree  # noqa: F401
import zipfile  # noqa: F401

import yaml  # noqa: F401
from swarmd_benchapp import _first_report

# module-level state an app builds at import: shared by preload until the collector walks it
CATALOG = [{"id": i, "name": f"item-{i}", "tags": [str(i % 7), str(i % 11)]}
           for i in range(20_000)]


def _job(seed: int) -> int:
    """A unit of work that leaves cyclic garbage behind, as ORMs and parsers do."""
    nodes = []
    for i in range(200):
        item: dict[str, object] = {"seed": seed, "i": i}
        item["self"] = item
        nodes.append(item)
    return len(json.dumps([n["i"] for n in nodes]))


def work(node) -> int:  # type: ignore[no-untyped-def]
    import time

    _first_report(node)  # tells the bench it is up
    seed = 0
    next_report = time.monotonic() + 1.0
    while not node.stopping.is_set():
        _job(seed)
        seed += 1
        now = time.monotonic()
        if now >= next_report:
            node.healthy()
            next_report = now + 1.0
        node.stopping.wait(0.1)
    return 0
