#!/usr/bin/env python3
"""Checks what infra/template.yaml deploys, beyond what cfn-lint and `sam validate` see.

The template is expanded by SAM CLI's own AWS::LanguageExtensions processor (Fn::ForEach,
conditions) and translated by the SAM translator, as `sam deploy` does, for two portals
with and without VPC subnets. Offline: no AWS account or credentials. Each failed check
names what is wrong; the exit status is 1 when any failed.
"""

import copy
import json
import sys
from pathlib import Path

try:
    from boto3.session import Session
    from samcli.lib.cfn_language_extensions.sam_integration import expand_language_extensions
    from samcli.yamlhelper import yaml_parse
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator
except ImportError as error:
    sys.exit(f"check_template.py needs aws-sam-cli importable by {sys.executable} ({error})")

TEMPLATE = Path(__file__).with_name("template.yaml")
PORTALS = ["acme", "acme-eu"]
MODE_RETRIES = {"incremental": 0, "resume": 0, "reconcile": 2, "full": 2, "reference": 0}
VPC_POLICY = "AWSLambdaVPCAccessExecutionRole"
SYNC_FUNCTION_ARN = {"Fn::GetAtt": ["SyncScheduledFunction", "Arn"]}
BACK_SYNC_FUNCTION_ARN = {"Fn::GetAtt": ["BackSyncFunction", "Arn"]}
PARAMETERS = {
    "PortalNames": ",".join(PORTALS),
    "ConfigSecretArn": "arn:aws:secretsmanager:eu-central-1:123456789012:secret:b24sync-config-AbCdEf",
    "AWS::Region": "eu-central-1",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::StackName": "b24sync",
}
VPC_PARAMETERS = {"SubnetIds": "subnet-0a1b2c3d,subnet-4e5f6a7b", "SecurityGroupIds": "sg-0a1b2c3d"}

failures = []


def check(condition, message):
    if not condition:
        failures.append(message)


def translate(template, parameters):
    """The SAM translator's output, with every function's code at a stand-in S3 location."""
    template = copy.deepcopy(template)
    template["Transform"] = "AWS::Serverless-2016-10-31"
    template["Globals"]["Function"]["CodeUri"] = "s3://bucket/key"
    # The template names AWS managed policies by ARN: no IAM look-up of policy names.
    translator = Translator(None, Parser(), boto_session=Session(region_name=parameters["AWS::Region"]))
    resources = translator.translate(template, dict(parameters), get_managed_policy_map=dict)["Resources"]
    translator.metrics.publish()  # to its offline publisher: nothing is sent
    return resources


def deployed(parameters):
    """The resources CloudFormation creates: the loop and the conditions resolved, then SAM."""
    expanded = expand_language_extensions(yaml_parse(TEMPLATE.read_text()), parameters, enabled=True)
    return translate(expanded.expanded_template, parameters)


def mentions(value, text):
    return text in json.dumps(value)


def of_type(resources, type_name):
    return {key: resource for key, resource in resources.items() if resource["Type"] == type_name}


def check_schedules(resources):
    schedules = {
        resource["Properties"]["Name"]: resource["Properties"]
        for resource in of_type(resources, "AWS::Scheduler::Schedule").values()
    }
    expected = {f"{portal}-{mode}" for portal in PORTALS for mode in MODE_RETRIES} | {"back-sync"}
    check(set(schedules) == expected, f"schedules {sorted(schedules)}, expected {sorted(expected)}")
    back_sync = schedules.get("back-sync")
    if back_sync is not None:
        target = back_sync["Target"]
        check(json.loads(target["Input"]) == {}, f"schedule back-sync: input {target['Input']}")
        check(target["Arn"] == BACK_SYNC_FUNCTION_ARN, f"schedule back-sync: target {target['Arn']}")
        check(back_sync["GroupName"] == {"Ref": "SyncScheduleGroup"}, f"schedule back-sync: group {back_sync['GroupName']}")
    for portal in PORTALS:
        for mode, retries in MODE_RETRIES.items():
            schedule = schedules.get(f"{portal}-{mode}")
            if schedule is None:
                continue
            target = schedule["Target"]
            name = f"schedule {portal}-{mode}"
            check(json.loads(target["Input"]) == {"portal": portal, "mode": mode}, f"{name}: input {target['Input']}")
            check(target["Arn"] == SYNC_FUNCTION_ARN, f"{name}: target {target['Arn']}")
            check(target["RoleArn"] == {"Fn::GetAtt": ["SchedulerInvokeRole", "Arn"]}, f"{name}: role {target['RoleArn']}")
            check(target["RetryPolicy"]["MaximumRetryAttempts"] == retries, f"{name}: retry policy {target['RetryPolicy']}")
            check(schedule["GroupName"] == {"Ref": "SyncScheduleGroup"}, f"{name}: group {schedule['GroupName']}")
    check(not of_type(resources, "AWS::Events::Rule"), "an EventBridge rule besides the schedules")


def check_scheduler_role(resources):
    role = resources["SchedulerInvokeRole"]["Properties"]
    trust = role["AssumeRolePolicyDocument"]["Statement"]
    check(
        [(s["Principal"], s["Condition"]["StringEquals"].get("aws:SourceArn")) for s in trust]
        == [({"Service": "scheduler.amazonaws.com"}, {"Fn::GetAtt": ["SyncScheduleGroup", "Arn"]})],
        f"the scheduler role trusts {trust}, expected the scheduler for the stack's schedule group",
    )
    statements = [s for policy in role["Policies"] for s in policy["PolicyDocument"]["Statement"]]
    check(
        [(s["Effect"], s["Action"], s["Resource"]) for s in statements]
        == [("Allow", "lambda:InvokeFunction", [SYNC_FUNCTION_ARN, BACK_SYNC_FUNCTION_ARN])],
        f"the scheduler role may {statements}",
    )
    check("ManagedPolicyArns" not in role, "the scheduler role has managed policies")
    roles = of_type(resources, "AWS::IAM::Role")
    functions = of_type(resources, "AWS::Lambda::Function")
    check(
        len(roles) == len(functions) + 1,
        f"roles {sorted(roles)}: expected one per function ({len(functions)}) and the scheduler's",
    )


def check_vpc_access(resources, with_vpc):
    """The ENI permissions go to the functions that reach the database (worker, sync, forwarder,
    status, back-sync) only when they are in a VPC; the function-URL functions are never in one."""
    for function, role in [
        ("ChangeWorkerFunction", "ChangeWorkerRole"),
        ("SyncScheduledFunction", "SyncScheduledRole"),
        ("DealForwarderFunction", "DealForwarderRole"),
        ("StatusFunction", "StatusRole"),
        ("BackSyncFunction", "BackSyncRole"),
    ]:
        properties = resources[function]["Properties"]
        check(properties["Role"] == {"Fn::GetAtt": [role, "Arn"]}, f"{function} runs as {properties['Role']}")
        check(("VpcConfig" in properties) == with_vpc, f"{function}: VpcConfig present is {'VpcConfig' in properties}")
        granted = mentions(resources[role]["Properties"].get("ManagedPolicyArns"), VPC_POLICY)
        check(granted == with_vpc, f"{role}: {VPC_POLICY} attached is {granted} with VPC {with_vpc}")
    for function in ["WebhookIntakeFunction", "DealRobotFunction"]:
        check("VpcConfig" not in resources[function]["Properties"], f"{function} is placed in a VPC")
        check(not mentions(resources[f"{function}Role"], VPC_POLICY), f"{function}'s role has {VPC_POLICY}")


def check_status_role(resources):
    """The status function reads the database and the configuration secret, nothing else."""
    role = resources["StatusRole"]["Properties"]
    check("Policies" not in role, f"the status role has its own policies: {role.get('Policies')}")
    url = resources.get("StatusFunctionUrl", {}).get("Properties", {})
    check(url.get("AuthType") == "NONE", f"the status function URL: {url}")


def check_vpc_policy_stays_conditional():
    """Even where the UseVpc condition reaches the SAM transform unresolved, no role gets the VPC
    policy outside `Fn::If: [UseVpc, ...]` (SAM adds it to a role it makes for any VpcConfig)."""
    template = yaml_parse(TEMPLATE.read_text())
    # The schedules are checked above; without them the template needs no language extensions.
    template["Resources"] = {key: value for key, value in template["Resources"].items() if not key.startswith("Fn::ForEach::")}
    resources = translate(template, PARAMETERS)
    for key, role in of_type(resources, "AWS::IAM::Role").items():
        for arn in role["Properties"].get("ManagedPolicyArns", []):
            if mentions(arn, VPC_POLICY):
                check("Fn::If" in arn and arn["Fn::If"][0] == "UseVpc", f"{key}: {VPC_POLICY} attached as {arn}")


def main():
    without_vpc = deployed(PARAMETERS)
    check_schedules(without_vpc)
    check_scheduler_role(without_vpc)
    check_vpc_access(without_vpc, with_vpc=False)
    check_status_role(without_vpc)
    check_vpc_access(deployed({**PARAMETERS, **VPC_PARAMETERS}), with_vpc=True)
    check_vpc_policy_stays_conditional()
    for failure in failures:
        print(f"infra/template.yaml: {failure}", file=sys.stderr)
    if failures:
        sys.exit(1)
    print(f"infra/template.yaml: schedules for {', '.join(PORTALS)}, scheduler role and VPC permissions as intended")


if __name__ == "__main__":
    main()
