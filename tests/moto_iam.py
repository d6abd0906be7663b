"""IAM setup for tests/iam.rs on a moto server started with
INITIAL_NO_AUTH_ACTION_COUNT=3: `bootstrap` makes exactly three unchecked
requests (an admin user, its policy, its key); everything after is signed
with keys and checked against IAM policies.

  moto_iam.py bootstrap                   -> prints the admin's key id and secret
  moto_iam.py user NAME POLICY.json       -> a user holding that inline policy; prints its keys
  moto_iam.py policy NAME POLICY.json     -> replaces that user's inline policy
  moto_iam.py bucket NAME                 -> creates a bucket
  moto_iam.py put BUCKET KEY FILE         -> uploads a file
  moto_iam.py exists BUCKET KEY           -> prints yes or no
  moto_iam.py list BUCKET PREFIX          -> prints the keys under PREFIX, one a line
  moto_iam.py uploads BUCKET              -> prints the count of multipart uploads in progress
  moto_iam.py send QUEUE_URL BODY         -> sends one message

The endpoint comes from AWS_ENDPOINT_URL, the caller's keys from the
environment (the admin's, after bootstrap).
"""
import json
import os
import sys

import boto3


def client(service):
    return boto3.client(service, endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")


def user(name, policy):
    iam = client("iam")
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName=name, PolicyDocument=policy)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    print(key["AccessKeyId"], key["SecretAccessKey"])


def main(args):
    if args[0] == "bootstrap":
        admin = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        user("admin", json.dumps(admin))
    elif args[0] == "user":
        with open(args[2]) as f:
            user(args[1], f.read())
    elif args[0] == "policy":
        with open(args[2]) as f:
            client("iam").put_user_policy(UserName=args[1], PolicyName=args[1], PolicyDocument=f.read())
    elif args[0] == "bucket":
        client("s3").create_bucket(Bucket=args[1])
    elif args[0] == "send":
        client("sqs").send_message(QueueUrl=args[1], MessageBody=args[2])
    elif args[0] == "exists":
        try:
            client("s3").head_object(Bucket=args[1], Key=args[2])
            print("yes")
        except client("s3").exceptions.ClientError:
            print("no")
    elif args[0] == "list":
        pages = client("s3").get_paginator("list_objects_v2").paginate(Bucket=args[1], Prefix=args[2])
        for page in pages:
            for o in page.get("Contents", []):
                print(o["Key"])
    elif args[0] == "uploads":
        print(len(client("s3").list_multipart_uploads(Bucket=args[1]).get("Uploads", [])))
    elif args[0] == "put":
        with open(args[3], "rb") as f:
            client("s3").put_object(Bucket=args[1], Key=args[2], Body=f.read())
    else:
        sys.exit(f"unknown command {args[0]}")


if __name__ == "__main__":
    main(sys.argv[1:])
