"""Sets up a local AWS API (moto, started with INITIAL_NO_AUTH_ACTION_COUNT=3+N) as a Lambda
function's account looks to it: a role allowed to read secrets, temporary credentials of
that role (with a session token, as Lambda hands them out), and N secrets. Exactly 3+N
unauthenticated calls; every later call must carry a valid SigV4 signature.

Usage: moto_setup.py ENDPOINT NAME JSON [NAME JSON ...]. Prints one JSON object."""

import json
import sys

import boto3

endpoint = sys.argv[1]
pairs = sys.argv[2:]
secrets_given = list(zip(pairs[0::2], pairs[1::2]))
session = boto3.session.Session(
    aws_access_key_id="setup", aws_secret_access_key="setup", region_name="us-east-1"
)
iam = session.client("iam", endpoint_url=endpoint)
sts = session.client("sts", endpoint_url=endpoint)
secrets = session.client("secretsmanager", endpoint_url=endpoint)

trust = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}
role = iam.create_role(RoleName="function", AssumeRolePolicyDocument=json.dumps(trust))
iam.put_role_policy(
    RoleName="function",
    PolicyName="read-secrets",
    PolicyDocument=json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}
            ],
        }
    ),
)
credentials = sts.assume_role(RoleArn=role["Role"]["Arn"], RoleSessionName="function")[
    "Credentials"
]
arns = [
    secrets.create_secret(Name=name, SecretString=secret_json)["ARN"]
    for name, secret_json in secrets_given
]
print(
    json.dumps(
        {
            "arns": arns,
            "accessKeyId": credentials["AccessKeyId"],
            "secretAccessKey": credentials["SecretAccessKey"],
            "sessionToken": credentials["SessionToken"],
        }
    )
)
