#!/usr/bin/env python3
"""Reads a Modelsmith output prefix back from S3 with boto3, an independent client.

  s3_readback.py ENDPOINT BUCKET PREFIX   (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)

Prints JSON: {"objects": {name: {"size": n, "sha256": hex}}, "manifest": <the manifest, parsed>}.
"""
import hashlib
import json
import sys

import boto3
from botocore.config import Config


def main():
    endpoint, bucket, prefix = sys.argv[1:4]
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}))
    objects = {}
    manifest = None
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/"):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            name = item["Key"][len(prefix.rstrip("/")) + 1:]
            objects[name] = {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
            if name == "modelsmith.manifest.json":
                manifest = json.loads(body)
    json.dump({"objects": objects, "manifest": manifest}, sys.stdout)


if __name__ == "__main__":
    main()
