"""Drive the official Azure Python SDKs against the siteflow Azure emulator.

Run by tests/azure-emulator/tests/sdk_fidelity.rs with the interpreter of the SDK venv
(.ci/venv, requirements in .ci/azure-sdk-requirements.txt). Environment:
  EMULATOR_BASE_URL, EMULATOR_CA_PEM, AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET,
  AZURE_SUBSCRIPTION_ID.
Prints one line per step ("ok <step>") and exits non-zero on the first failure.
"""

import base64
import os
import sys
import time

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.authorization.models import RoleAssignmentCreateParameters
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.containerservice import ContainerServiceClient
from azure.mgmt.containerservice.models import (
    AgentPool,
    ManagedCluster,
    ManagedClusterAADProfile,
    ManagedClusterAgentPoolProfile,
    ManagedClusterIdentity,
    ManagedClusterOIDCIssuerProfile,
    ManagedClusterSecurityProfile,
    ManagedClusterSecurityProfileWorkloadIdentity,
)
from azure.mgmt.hybridkubernetes import ConnectedKubernetesClient
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.msi.models import FederatedIdentityCredential, Identity
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.compute.models import VirtualMachine, VirtualMachineScaleSet, VirtualMachineScaleSetVMInstanceIDs
from azure.mgmt.hybridkubernetes.models import ConnectedCluster
from azure.mgmt.network.models import (
    NetworkInterface,
    NetworkInterfaceIPConfiguration,
    NetworkSecurityGroup,
    PublicIPAddress,
    SecurityRule,
    Subnet,
    VirtualNetwork,
)
from azure.mgmt.resource.resources import ResourceManagementClient
from azure.mgmt.storage import StorageManagementClient
from azure.mgmt.storage.models import FileShare, Sku, StorageAccountCreateParameters
from azure.mgmt.resource.resources.models import ResourceGroup

BASE = os.environ["EMULATOR_BASE_URL"].rstrip("/")
CA = os.environ["EMULATOR_CA_PEM"]
TENANT = os.environ["AZURE_TENANT_ID"]
SUB = os.environ["AZURE_SUBSCRIPTION_ID"]
RG = "rg-fidelity"
LOC = "eastus"
POLL = {"polling_interval": 0.05}


T0 = time.monotonic()


def step(name):
    print(f"ok {name} ({time.monotonic() - T0:.2f}s)", flush=True)


def check(cond, msg):
    if not cond:
        print(f"FAIL {msg}", flush=True)
        sys.exit(1)


cred = ClientSecretCredential(
    TENANT,
    os.environ["AZURE_CLIENT_ID"],
    os.environ["AZURE_CLIENT_SECRET"],
    authority=BASE,
    disable_instance_discovery=True,
    connection_verify=CA,
)
token = cred.get_token("https://management.azure.com/.default")
check(token.token.count(".") == 2, "access token is JWT-shaped")
step("login (ClientSecretCredential)")

common = {"base_url": BASE, "connection_verify": CA}
resources = ResourceManagementClient(cred, SUB, **common)
network = NetworkManagementClient(cred, SUB, **common)
compute = ComputeManagementClient(cred, SUB, **common)
arc = ConnectedKubernetesClient(cred, SUB, **common)

rg = resources.resource_groups.create_or_update(RG, ResourceGroup(location=LOC, tags={"run": "fidelity"}))
check(rg.name == RG and rg.properties.provisioning_state == "Succeeded", f"resource group: {rg}")
check(resources.resource_groups.check_existence(RG), "resource group exists")
step("resource group create/get")

# Registered now, used much later (after the RP's own propagation delay).
resources.providers.register("Microsoft.ManagedIdentity")
resources.providers.register("Microsoft.ContainerService")
prov = resources.providers.register("Microsoft.Kubernetes")
check(prov.registration_state in ("Registering", "Registered"), f"register: {prov.registration_state}")
deadline = time.time() + 20
while resources.providers.get("Microsoft.Kubernetes").registration_state != "Registered":
    check(time.time() < deadline, "provider never became Registered")
    time.sleep(0.05)
step("provider register + wait")

vnet = network.virtual_networks.begin_create_or_update(
    RG, "vnet1", VirtualNetwork(location=LOC, address_space={"addressPrefixes": ["10.0.0.0/16"]}), **POLL
).result()
check(vnet.provisioning_state == "Succeeded", f"vnet state {vnet.provisioning_state}")
subnet = network.subnets.begin_create_or_update(
    RG, "vnet1", "default", Subnet(address_prefix="10.0.1.0/24"), **POLL
).result()
check(subnet.address_prefix == "10.0.1.0/24", f"subnet prefix: {subnet.as_dict()}")
nsg = network.network_security_groups.begin_create_or_update(
    RG,
    "nsg1",
    NetworkSecurityGroup(
        location=LOC,
        security_rules=[
            SecurityRule(name="ssh", protocol="Tcp", access="Allow", direction="Inbound", priority=100,
                         source_address_prefix="*", source_port_range="*", destination_address_prefix="*",
                         destination_port_range="22")
        ],
    ),
    **POLL,
).result()
check(len(nsg.default_security_rules) == 6, f"default rules: {len(nsg.default_security_rules or [])}")
check([r.name for r in nsg.security_rules] == ["ssh"], "custom rule")
pip = network.public_ip_addresses.begin_create_or_update(
    RG, "pip1", PublicIPAddress(location=LOC, sku={"name": "Standard"}, public_ip_allocation_method="Static"), **POLL
).result()
check(pip.ip_address, "public ip allocated")
nic = network.network_interfaces.begin_create_or_update(
    RG,
    "nic1",
    NetworkInterface(
        location=LOC,
        network_security_group={"id": nsg.id},
        ip_configurations=[
            NetworkInterfaceIPConfiguration(name="ipconfig1", subnet={"id": subnet.id}, public_ip_address={"id": pip.id})
        ],
    ),
    **POLL,
).result()
check(nic.ip_configurations[0].private_ip_address == "10.0.1.4", f"nic ip {nic.ip_configurations[0].private_ip_address}")
step("vnet + subnet + nsg + public ip + nic (LROs)")

try:
    network.network_security_groups.begin_create_or_update(
        RG, "nsg-bad", NetworkSecurityGroup(location=LOC, security_rules=[
            SecurityRule(name="x", protocol="Carrier-Pigeon", access="Allow", direction="Inbound", priority=100)]),
    ).result()
    check(False, "invalid enum accepted")
except HttpResponseError as e:
    check(e.status_code == 400 and e.error.code == "InvalidParameter", f"enum error: {e.status_code} {e.error.code}")
step("InvalidParameter surfaces as HttpResponseError")

poller = compute.virtual_machines.begin_create_or_update(
    RG,
    "vm1",
    VirtualMachine(
        location=LOC,
        hardware_profile={"vmSize": "Standard_B2s"},
        storage_profile={
            "imageReference": {"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server", "version": "latest"},
            "osDisk": {"createOption": "FromImage", "managedDisk": {"storageAccountType": "Standard_LRS"}},
        },
        os_profile={
            "computerName": "vm1",
            "adminUsername": "azureuser",
            "customData": "I2Nsb3VkLWNvbmZpZwo=",
            "linuxConfiguration": {
                "disablePasswordAuthentication": True,
                "ssh": {"publicKeys": [{"path": "/home/azureuser/.ssh/authorized_keys", "keyData": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKey test"}]},
            },
        },
        network_profile={"networkInterfaces": [{"id": nic.id, "properties": {"primary": True}}]},
    ),
    **POLL,
)
vm = poller.result()
check(vm.provisioning_state == "Succeeded", f"vm state {vm.provisioning_state}")
vm = compute.virtual_machines.get(RG, "vm1", expand="instanceView")
check(vm.os_profile.custom_data is None, "customData is write-only")
codes = [s.code for s in vm.instance_view.statuses]
check("PowerState/running" in codes, f"instance view {codes}")
nic = network.network_interfaces.get(RG, "nic1")
check(nic.virtual_machine.id.lower() == vm.id.lower(), "nic attached to vm")
step("vm create (LRO) + get + instance view")

# VM sizes: the spec's VirtualMachineSizeTypes stopped at 2023's sizes; current ones are taken
# (a resize of vm1 to a v6 size), a size no region has is refused.
vm.hardware_profile.vm_size = "Standard_D2as_v6"
vm.instance_view = None
vm = compute.virtual_machines.begin_create_or_update(RG, "vm1", vm, **POLL).result()
check(vm.hardware_profile.vm_size == "Standard_D2as_v6", f"resized to {vm.hardware_profile.vm_size}")
try:
    vm.hardware_profile.vm_size = "Standard_Q4s_v5"
    compute.virtual_machines.begin_create_or_update(RG, "vm1", vm, **POLL).result()
    check(False, "a made-up VM size accepted")
except HttpResponseError as e:
    check(
        e.status_code == 400 and e.error.code == "InvalidParameter" and e.error.target == "vmSize",
        f"vm size error: {e.status_code} {e.error.code} {e.error.target}",
    )
step("current VM sizes accepted, made-up ones refused (InvalidParameter, target vmSize)")

# Seed 003's scale set: spot B1ls instances on an S4 OS disk (32 GB of Standard_LRS). Its
# instances listed with `$expand=instanceView` (how azure.vmss reads their power states), one
# powered off, its instance view read on its own too.
pool = compute.virtual_machine_scale_sets.begin_create_or_update(
    RG,
    "pool1",
    VirtualMachineScaleSet(
        location=LOC,
        sku={"name": "Standard_B1ls", "tier": "Standard", "capacity": 2},
        properties={
            "orchestrationMode": "Uniform",
            "upgradePolicy": {"mode": "Manual"},
            "overprovision": False,
            "virtualMachineProfile": {
                "priority": "Spot",
                "evictionPolicy": "Deallocate",
                "billingProfile": {"maxPrice": -1},
                "osProfile": {"computerNamePrefix": "pool1", "adminUsername": "azureuser"},
                "storageProfile": {
                    "imageReference": {"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server", "version": "latest"},
                    "osDisk": {"createOption": "FromImage", "diskSizeGB": 32, "managedDisk": {"storageAccountType": "Standard_LRS"}},
                },
                "networkProfile": {"networkInterfaceConfigurations": [{"name": "nic", "properties": {
                    "primary": True, "ipConfigurations": [{"name": "ip", "properties": {"subnet": {"id": subnet.id}}}]}}]},
            },
        },
    ),
    **POLL,
).result()
os_disk = pool.properties.virtual_machine_profile.storage_profile.os_disk
check(pool.sku.name == "Standard_B1ls" and pool.sku.capacity == 2, f"pool sku {pool.sku}")
check(os_disk.disk_size_gb == 32 and os_disk.managed_disk.storage_account_type == "Standard_LRS", f"os disk {os_disk}")


def pool_power():
    return {
        v.instance_id: [s.code for s in v.properties.instance_view.statuses if s.code.startswith("PowerState/")]
        for v in compute.virtual_machine_scale_set_vms.list(RG, "pool1", expand="instanceView")
    }


check(pool_power() == {"0": ["PowerState/running"], "1": ["PowerState/running"]}, f"pool power {pool_power()}")
compute.virtual_machine_scale_sets.begin_power_off(
    RG, "pool1", VirtualMachineScaleSetVMInstanceIDs(instance_ids=["1"]), **POLL
).result()
check(pool_power() == {"0": ["PowerState/running"], "1": ["PowerState/stopped"]}, f"pool power {pool_power()}")
view = compute.virtual_machine_scale_set_vms.get_instance_view(RG, "pool1", "1")
check("PowerState/stopped" in [s.code for s in view.statuses], f"instance view {view}")
step("scale set (spot, S4 disk): instances with instance views, power off one")

# The onboarding key pair, as `az connectedk8s connect` makes it (base64 DER PKCS#1 public key).
agent_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
agent_pub = base64.b64encode(
    agent_key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
).decode()
cc = arc.connected_cluster.begin_create_or_replace(
    RG,
    "arc1",
    ConnectedCluster(
        location=LOC,
        identity={"type": "SystemAssigned"},
        agent_public_key_certificate=agent_pub,
        distribution="k3s",
        oidc_issuer_profile={"enabled": True},
        security_profile={"workloadIdentity": {"enabled": True}},
    ),
    **POLL,
).result()
check(cc.provisioning_state == "Succeeded", f"cluster state {cc.provisioning_state}")
time.sleep(0.3)
cc = arc.connected_cluster.get(RG, "arc1")
check(cc.connectivity_status == "Connecting", f"connected before any agent: {cc.connectivity_status}")
check(not cc.oidc_issuer_profile.issuer_url, "issuer URL before any agent")
step("connected cluster create: Connecting until an agent proves the key")


def agent_connect(key):
    nonce = requests.post(f"{BASE}/arc-agents/v1/challenge", json={"resourceId": cc.id}, verify=CA).json()["nonce"]
    sig = base64.b64encode(key.sign(nonce.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()
    return requests.post(
        f"{BASE}/arc-agents/v1/connect",
        json={"resourceId": cc.id, "nonce": nonce, "signature": sig, "kubernetesVersion": "v1.31.4+k3s1", "totalNodeCount": 2},
        verify=CA,
    )


r = agent_connect(rsa.generate_private_key(public_exponent=65537, key_size=2048))
check(r.status_code == 403 and r.json()["error"]["code"] == "InvalidAgentSignature", f"wrong key accepted: {r.status_code} {r.text}")
check(arc.connected_cluster.get(RG, "arc1").connectivity_status == "Connecting", "a wrong key connected the cluster")
r = agent_connect(agent_key)
check(r.status_code == 200 and r.json().get("agentToken"), f"agent connect: {r.status_code} {r.text}")
cc = arc.connected_cluster.get(RG, "arc1")
check(cc.connectivity_status == "Connected" and cc.oidc_issuer_profile.issuer_url, f"not connected: {cc.connectivity_status}")
check(cc.total_node_count == 2 and cc.kubernetes_version == "v1.31.4+k3s1", "agent report kept")
check(cc.oidc_issuer_profile.issuer_url.endswith("/"), "issuer URL has a trailing slash")
step("agent proves the onboarding key: Connected + issuer URL")

kv = SecretClient(vault_url=BASE, credential=cred, verify_challenge_resource=False, connection_verify=CA)
kv.set_secret("k3s-token", "s3cr3t-value")
got = kv.get_secret("k3s-token")
check(got.value == "s3cr3t-value", "secret round trip")
try:
    kv.get_secret("missing-secret")
    check(False, "missing secret found")
except ResourceNotFoundError:
    pass
step("key vault set/get (401 challenge flow)")

msi = ManagedServiceIdentityClient(cred, SUB, **common)
authz = AuthorizationManagementClient(cred, SUB, **common)
ident = msi.user_assigned_identities.create_or_update(RG, "wi1", Identity(location=LOC, tags={"run": "fidelity"}))
check(ident.principal_id and ident.client_id and ident.tenant_id == TENANT, f"identity ids: {ident.as_dict()}")
check(msi.user_assigned_identities.get(RG, "wi1").principal_id == ident.principal_id, "identity get")
fic = msi.federated_identity_credentials.create_or_update(
    RG, "wi1", "sa1",
    FederatedIdentityCredential(issuer="https://oidc.example.test/", subject="system:serviceaccount:default:app",
                                audiences=["api://AzureADTokenExchange"]),
)
check(fic.subject == "system:serviceaccount:default:app" and fic.audiences == ["api://AzureADTokenExchange"], f"fic: {fic.as_dict()}")
check([f.name for f in msi.federated_identity_credentials.list(RG, "wi1")] == ["sa1"], "fic list")
step("managed identity + federated credential (azure-mgmt-msi)")

scope = f"/subscriptions/{SUB}/resourceGroups/{RG}"
contributor = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/b24988ac-6180-42a0-ab88-20f7382dd24c"
name = "05c5a614-a7d6-4502-b150-c2fb455033ff"
ra = authz.role_assignments.create(
    scope, name,
    RoleAssignmentCreateParameters(role_definition_id=contributor, principal_id=ident.principal_id, principal_type="ServicePrincipal"),
)
check(ra.scope == scope and ra.principal_id == ident.principal_id, f"role assignment: {ra.as_dict()}")
check(authz.role_assignments.get(scope, name).role_definition_id.endswith("b24988ac-6180-42a0-ab88-20f7382dd24c"), "ra get")
try:
    authz.role_assignments.create(
        scope, "15c5a614-a7d6-4502-b150-c2fb455033ff",
        RoleAssignmentCreateParameters(role_definition_id=contributor, principal_id=ident.principal_id,
                                       principal_type="ServicePrincipal"),
    )
    check(False, "duplicate role assignment accepted")
except HttpResponseError as e:
    check(e.status_code == 409 and e.error.code == "RoleAssignmentExists", f"duplicate: {e.status_code} {e.error.code}")
try:
    authz.role_assignments.create(
        scope, "25c5a614-a7d6-4502-b150-c2fb455033ff",
        RoleAssignmentCreateParameters(role_definition_id=contributor, principal_id="9d9d9d9d-0000-0000-0000-000000000000",
                                       principal_type="ServicePrincipal"),
    )
    check(False, "unknown principal accepted")
except HttpResponseError as e:
    check(e.status_code == 400 and e.error.code == "PrincipalNotFound", f"unknown principal: {e.status_code} {e.error.code}")
# The model defaults principalType to User (the spec's default): ARM refuses that for a
# service principal.
try:
    authz.role_assignments.create(
        scope, "35c5a614-a7d6-4502-b150-c2fb455033ff",
        RoleAssignmentCreateParameters(role_definition_id=contributor.replace("b24988ac-6180-42a0-ab88-20f7382dd24c", "acdd72a7-3385-48ef-bd42-f606fba81ae7"),
                                       principal_id=ident.principal_id),
    )
    check(False, "principalType User accepted for a service principal")
except HttpResponseError as e:
    check(e.status_code == 400 and e.error.code == "UnmatchedPrincipalType", f"default type: {e.status_code} {e.error.code}")
check([r.name for r in authz.role_assignments.list_for_resource_group(RG)] == [name], "ra list")
check(authz.role_assignments.delete(scope, name).name == name, "ra delete")
check(authz.role_assignments.delete(scope, name) is None, "ra delete again: 204")
msi.user_assigned_identities.delete(RG, "wi1")
step("role assignment create/get/list/delete + RoleAssignmentExists + PrincipalNotFound (azure-mgmt-authorization)")

# AKS (azure-mgmt-containerservice): a managed cluster with Entra ID, no local accounts, the
# OIDC issuer and workload identity; a user pool; credentials.
aks = ContainerServiceClient(cred, SUB, **common)
mc = aks.managed_clusters.begin_create_or_update(
    RG,
    "aks1",
    ManagedCluster(
        location=LOC,
        identity=ManagedClusterIdentity(type="SystemAssigned"),
        dns_prefix="aks1",
        kubernetes_version="1.33",
        agent_pool_profiles=[ManagedClusterAgentPoolProfile(name="system", count=1, vm_size="Standard_D2s_v5", mode="System")],
        aad_profile=ManagedClusterAADProfile(managed=True, enable_azure_rbac=True, admin_group_object_i_ds=["00000000-0000-0000-0000-0000000000aa"]),
        disable_local_accounts=True,
        oidc_issuer_profile=ManagedClusterOIDCIssuerProfile(enabled=True),
        security_profile=ManagedClusterSecurityProfile(workload_identity=ManagedClusterSecurityProfileWorkloadIdentity(enabled=True)),
    ),
    **POLL,
).result()
check(mc.provisioning_state == "Succeeded", f"aks state {mc.provisioning_state}")
check(mc.fqdn.endswith(f".hcp.{LOC}.azmk8s.io"), f"aks fqdn {mc.fqdn}")
check(mc.oidc_issuer_profile.issuer_url.startswith(f"https://{LOC}.oic.prod-aks.azure.com/"), "issuer url")
check(mc.identity_profile["kubeletidentity"].client_id, "kubelet identity")
check(mc.node_resource_group == f"MC_{RG}_aks1_{LOC}", f"node rg {mc.node_resource_group}")
pool = aks.agent_pools.begin_create_or_update(
    RG, "aks1", "apps", AgentPool(count=2, vm_size="Standard_D4as_v6", mode="User"), **POLL
).result()
check(pool.count == 2 and pool.provisioning_state == "Succeeded", f"pool {pool.count} {pool.provisioning_state}")
check(sorted(p.name for p in aks.agent_pools.list(RG, "aks1")) == ["apps", "system"], "pools listed")
check(len(aks.managed_clusters.get(RG, "aks1").agent_pool_profiles) == 2, "profiles follow the pools")
creds = aks.managed_clusters.list_cluster_user_credentials(RG, "aks1")
check("kubelogin" in creds.kubeconfigs[0].value.decode(), "user kubeconfig uses kubelogin")
try:
    aks.managed_clusters.list_cluster_admin_credentials(RG, "aks1")
    check(False, "admin credential with local accounts disabled")
except HttpResponseError as e:
    check(e.status_code == 400, f"admin credential: {e.status_code} {e.error.code}")
try:
    aks.agent_pools.begin_delete(RG, "aks1", "system", **POLL).result()
    check(False, "the last system pool deleted")
except HttpResponseError as e:
    check(e.error.code == "OperationNotAllowed", f"system pool delete: {e.error.code}")
aks.agent_pools.begin_delete(RG, "aks1", "apps", **POLL).result()
aks.managed_clusters.begin_delete(RG, "aks1", **POLL).result()
step("aks managed cluster + agent pool + credentials (azure-mgmt-containerservice)")
# Storage (azure-mgmt-storage 25.3, its default api-version): the account create is an LRO
# (202 + Location), listKeys gives two keys, shares are synchronous, names are global.
storage = StorageManagementClient(cred, SUB, **common)
acct = storage.storage_accounts.begin_create(
    RG,
    "fidelityfiles",
    StorageAccountCreateParameters(
        location=LOC, kind="StorageV2", sku=Sku(name="Standard_LRS"),
        allow_shared_key_access=True, minimum_tls_version="TLS1_2",
    ),
    **POLL,
).result()
check(acct.provisioning_state == "Succeeded", f"account state {acct.provisioning_state}")
check(acct.primary_endpoints.file == "https://fidelityfiles.file.core.windows.net/", f"file endpoint {acct.primary_endpoints.file}")
check(acct.sku.tier == "Standard" and acct.minimum_tls_version == "TLS1_2", f"account: {acct.as_dict()}")
got = storage.storage_accounts.get_properties(RG, "fidelityfiles")
check(got.allow_shared_key_access is True, "allowSharedKeyAccess kept")
# `keys` is also Mapping.keys on the SDK's models: read the wire field.
keys = storage.storage_accounts.list_keys(RG, "fidelityfiles")["keys"]
check(len(keys) == 2 and keys[0]["keyName"] == "key1" and len(keys[0]["value"]) == 88, "two account keys")
share = storage.file_shares.create(RG, "fidelityfiles", "data", FileShare(share_quota=100))
check(share.share_quota == 100 and share.name == "data", f"share: {share.as_dict()}")
check(storage.file_shares.get(RG, "fidelityfiles", "data").share_quota == 100, "share get")
resources.resource_groups.create_or_update("rg-fidelity-other", ResourceGroup(location=LOC))
try:
    storage.storage_accounts.begin_create(
        "rg-fidelity-other", "fidelityfiles",
        StorageAccountCreateParameters(location=LOC, kind="StorageV2", sku=Sku(name="Standard_LRS")), **POLL,
    ).result()
    check(False, "a taken account name was accepted")
except HttpResponseError as e:
    check(e.status_code == 409 and e.error.code == "StorageAccountAlreadyTaken", f"taken: {e.status_code} {e.error and e.error.code}")
storage.file_shares.delete(RG, "fidelityfiles", "data")
storage.storage_accounts.delete(RG, "fidelityfiles")
try:
    storage.storage_accounts.get_properties(RG, "fidelityfiles")
    check(False, "account still there")
except ResourceNotFoundError:
    pass
step("storage account (LRO), listKeys, file share, global names, delete")

compute.virtual_machines.begin_delete(RG, "vm1", **POLL).result()
try:
    compute.virtual_machines.get(RG, "vm1")
    check(False, "vm still there")
except ResourceNotFoundError as e:
    check(e.error.code == "ResourceNotFound", f"code {e.error.code}")
arc.connected_cluster.begin_delete(RG, "arc1", **POLL).result()
resources.resource_groups.begin_delete(RG, **POLL).result()
check(not resources.resource_groups.check_existence(RG), "resource group deleted")
step("delete vm, cluster, resource group (LROs)")
print("ALL OK", flush=True)
