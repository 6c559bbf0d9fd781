"""MinIO, FerretDB and the Ray head of the test bed are real servers speaking their protocols."""

from __future__ import annotations

import uuid

import boto3
import pytest
import ray
from pymongo import MongoClient

pytestmark = pytest.mark.integration


def test_minio_put_get_list(bed):
    s3 = boto3.client("s3", endpoint_url=bed.s3_endpoint, aws_access_key_id=bed.s3_access_key,
                      aws_secret_access_key=bed.s3_secret_key, region_name="us-east-1")
    bucket = f"b-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="dir/a.txt", Body=b"alpha")
    s3.put_object(Bucket=bucket, Key="dir/b.txt", Body=b"beta")
    assert s3.get_object(Bucket=bucket, Key="dir/a.txt")["Body"].read() == b"alpha"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="dir/")["Contents"]]
    assert keys == ["dir/a.txt", "dir/b.txt"]
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=bucket, Key="dir/missing")


def test_ferretdb_insert_find_update(bed):
    with MongoClient(bed.mongodb_uri, serverSelectionTimeoutMS=10_000) as mongo:
        collection = mongo["modeleval_test"][f"c{uuid.uuid4().hex[:8]}"]
        collection.insert_one({"_id": "e1", "phase": "Running", "rows": 10})
        collection.update_one({"_id": "e1"}, {"$set": {"phase": "Succeeded"}, "$inc": {"rows": 5}})
        assert collection.find_one({"_id": "e1"}) == {"_id": "e1", "phase": "Succeeded", "rows": 15}
        collection.update_one({"_id": "e2"}, {"$set": {"phase": "Pending"}}, upsert=True)
        assert sorted(d["_id"] for d in collection.find({})) == ["e1", "e2"]


def test_ray_task_runs_on_local_head(bed):
    if ray.is_initialized():  # an earlier test in this process connected already
        ray.shutdown()
    ray.init(address=bed.ray_address, namespace="testbed", log_to_driver=False)
    try:
        @ray.remote(num_cpus=1)
        def square(x: int) -> int:
            return x * x

        assert ray.get([square.remote(i) for i in range(8)]) == [i * i for i in range(8)]
        assert ray.cluster_resources().get("CPU", 0) >= 1
    finally:
        ray.shutdown()
