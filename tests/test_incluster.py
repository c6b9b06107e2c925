"""In-cluster mode: the service-account kubeconfig, the report archive in the Job's log, and the shipped
RBAC proved against the simulated cluster's real RBAC with the service account's own token."""

from __future__ import annotations

import copy
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kr8s
import pytest
import yaml
from kr8s._async_utils import as_sync_func
from kr8s.objects import new_class

from gpu_conformance import incluster
from gpu_conformance.cli import main
from gpu_conformance.runner import api_call, create_object
from gpu_conformance.sim import scenario
from gpu_conformance.waiting import wait_for

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "incluster"
PART_OF = ("app.kubernetes.io/part-of", "gpu-conformance")
NOT_DISRUPTIVE = ("-m", "not disruptive")
FULL_GATE = "--gate=full"  # every non-disruptive check: the notebook and dcgmproftester too
SUITE_USER = "system:serviceaccount:gpu-conformance:gpu-conformance"

# The admission policy's kinds, registered with their plurals for create_object (it would guess "...policys").
# Kept referenced: kr8s finds classes among APIObject's subclasses, which forgets a class once it is collected.
ADMISSION_CLASSES = [new_class(kind, "admissionregistration.k8s.io/v1", asyncio=False, namespaced=False, plural=plural)
                     for kind, plural in (("ValidatingAdmissionPolicy", "validatingadmissionpolicies"),
                                          ("ValidatingAdmissionPolicyBinding", "validatingadmissionpolicybindings"))]


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# -- the report archive ---------------------------------------------------------------------------


@pytest.fixture
def report_dir(tmp_path: Path) -> Path:
    rd = tmp_path / "reports"
    (rd / "allure-results").mkdir(parents=True)
    (rd / "summary.json").write_text(json.dumps({"totals": {"passed": 3, "failed": 1, "error": 0, "skipped": 2}}))
    (rd / "allure-results" / "a-result.json").write_text("{}")
    (rd / "report.html").write_bytes(os.urandom(20_000))  # incompressible: many base64 lines
    return rd


def test_the_archive_survives_the_log_and_comes_back_whole(report_dir: Path, tmp_path: Path) -> None:
    lines = incluster.encode(incluster.Archive(1, incluster.pack(report_dir)))
    assert lines[0].startswith(incluster.BEGIN) and "exit-code=1" in lines[0] and lines[-1] == incluster.END
    assert len(lines) > 300 and all(len(line) <= incluster.LINE_WIDTH for line in lines[1:-1])
    # The run's own output comes first; `kubectl logs --timestamps` prefixes every line.
    log = ["pytest output", "== gpu-conformance: 3 passed", *(f"2026-11-23T10:00:00.000Z {line}" for line in lines)]
    archive = incluster.decode(log)
    assert archive.exit_code == 1
    out = tmp_path / "out"
    files = incluster.unpack(archive, out)
    assert _tree(out) == _tree(report_dir) and len(files) == 3


def test_a_truncated_damaged_or_missing_archive_is_one_error(report_dir: Path) -> None:
    lines = incluster.encode(incluster.Archive(0, incluster.pack(report_dir)))
    with pytest.raises(incluster.ArchiveError, match="truncated: BEGIN marker without END"):
        incluster.decode(lines[:-40])
    with pytest.raises(incluster.ArchiveError, match="damaged: .* bytes, or a sha256 mismatch"):
        incluster.decode(lines[:50] + lines[51:])
    with pytest.raises(incluster.ArchiveError, match="no report archive in the log"):
        incluster.decode(["pytest output", "still running"])
    assert incluster.ArchiveError("x").exit_code == 3


def test_results_from_a_saved_log_exit_with_the_runs_code(report_dir: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "job.log"
    log.write_text("collected 109 items\n" + "\n".join(incluster.encode(incluster.Archive(1, incluster.pack(report_dir)))))
    out = tmp_path / "fetched"
    assert main(["results", f"--log-file={log}", f"--out={out}"]) == 1
    printed = capsys.readouterr().out
    assert "run exit code 1 (conformance failure): 3 passed, 1 failed, 0 error, 2 skipped" in printed
    assert f"reports: {out}/ (3 file(s) from {log})" in printed and _tree(out) == _tree(report_dir)
    # Cut short (the pod was killed while printing it): one line, exit 3.
    log.write_text("\n".join(log.read_text().splitlines()[:-5]))
    assert main(["results", f"--log-file={log}", f"--out={tmp_path / 'cut'}"]) == 3
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"gpu-conformance: error: {log}: report archive truncated")


def test_an_absent_report_dir_still_carries_the_exit_code(tmp_path: Path) -> None:
    archive = incluster.decode(incluster.encode(incluster.Archive(3, incluster.pack(tmp_path / "never-written"))))
    assert archive.exit_code == 3 and incluster.unpack(archive, tmp_path / "out") == []


class _FakePod:
    def __init__(self, name: str, created: str, lines: list[str]) -> None:
        self.name, self.raw, self._lines = name, {"metadata": {"creationTimestamp": created}, "status": {"phase": "Succeeded"}}, lines

    def logs(self, timeout: int) -> Iterator[str]:
        return iter(self._lines)


class _FakeApi:
    """Answers pod lists by label selector, as kr8s does."""

    def __init__(self, pods: dict[str, list[_FakePod]]) -> None:
        self.pods, self.asked = pods, []

    def get(self, kind: str, namespace: str, label_selector: str) -> list[_FakePod]:
        self.asked.append(label_selector)
        return self.pods.get(label_selector, [])


def test_the_newest_pod_of_the_job_is_read() -> None:
    api = _FakeApi({"job-name=gc": [_FakePod("gc-old", "2026-11-23T09:00:00Z", ["old"]),
                                    _FakePod("gc-new", "2026-11-23T10:00:00Z", ["new"])]})
    assert incluster.job_pod_log(api, "ns", "gc") == ("gc-new", "Succeeded", ["new"])  # type: ignore[arg-type]
    assert api.asked == ["batch.kubernetes.io/job-name=gc", "job-name=gc"]
    with pytest.raises(incluster.ArchiveError, match="no pod of Job ns/other"):
        incluster.job_pod_log(api, "ns", "other")  # type: ignore[arg-type]


# -- the service-account kubeconfig ---------------------------------------------------------------


def _sa_dir(root: Path, token: str, ca: bytes = b"ca") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "token").write_text(token)
    (root / "ca.crt").write_bytes(ca)
    (root / "namespace").write_text("gpu-conformance")
    return root


def test_the_kubeconfig_is_private_and_names_the_token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sa = _sa_dir(tmp_path / "sa", "not-a-real-token-value")
    monkeypatch.setenv(incluster.SERVICEACCOUNT_DIR_ENV, str(sa))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    path = Path(incluster.run_kubeconfig(True, None) or "")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    doc = yaml.safe_load(path.read_text())
    assert doc["clusters"][0]["cluster"] == {"server": "https://[fd00::1]:443", "certificate-authority": str(sa / "ca.crt")}
    assert doc["users"][0]["user"]["tokenFile"] == str(sa / "token")
    assert doc["contexts"][0]["context"]["namespace"] == "gpu-conformance"
    assert incluster.run_kubeconfig(False, "given") == "given"


def test_in_cluster_mistakes_are_usage_errors_that_show_no_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(incluster.SERVICEACCOUNT_DIR_ENV, str(_sa_dir(tmp_path / "sa", "not-a-real-token-value")))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["run", "--in-cluster", f"--report-dir={tmp_path / 'r'}"]) == 2
    assert "KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not set" in capsys.readouterr().err
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "1")
    assert main(["run", "--in-cluster", "--kubeconfig=k", f"--report-dir={tmp_path / 'r'}"]) == 2
    assert "--in-cluster and --kubeconfig exclude each other" in capsys.readouterr().err
    monkeypatch.setenv(incluster.SERVICEACCOUNT_DIR_ENV, str(tmp_path / "missing"))
    assert main(["run", "--in-cluster", f"--report-dir={tmp_path / 'r'}"]) == 2
    assert "cannot read the service-account token" in capsys.readouterr().err
    # job-run takes the run's arguments only after `--`, and archives even a run that never started.
    assert main(["job-run", f"--report-dir={tmp_path / 'r'}", "--", "--in-cluster"]) == 2
    captured = capsys.readouterr()
    assert incluster.decode(captured.out.splitlines()).exit_code == 2
    assert "not-a-real-token-value" not in captured.out + captured.err


# -- the shipped manifests ------------------------------------------------------------------------


def test_every_shipped_object_is_labelled_and_least_privilege() -> None:
    files = ["namespace.yaml", "serviceaccount.yaml", "rbac.yaml", "admission-policy.yaml", "job.yaml",
             "opt-in/rbac-disruptive.yaml", "opt-in/rbac-fanout.yaml"]
    objects = [d for f in files for d in _docs(f)]
    assert all(o["metadata"]["labels"][PART_OF[0]] == PART_OF[1] for o in objects)
    base = next(o for o in _docs("rbac.yaml") if o["kind"] == "ClusterRole")
    verbs = {(res, v) for r in base["rules"] for res in r["resources"] for v in r["verbs"]}
    assert not any("*" in (res, v) for res, v in verbs)
    assert {v for _, v in verbs} <= {"get", "list", "watch", "create", "delete"}  # never update, patch, escalate, bind
    assert {res for res, v in verbs if v == "watch"} == {"pods"}
    assert {res for res, v in verbs if v == "delete"} == {"namespaces"}  # the disruptive role deletes pods
    disruptive = next(o for o in _docs("opt-in/rbac-disruptive.yaml") if o["kind"] == "ClusterRole")
    assert {(res, v) for r in disruptive["rules"] for res in r["resources"] for v in r["verbs"]} == {
        ("pods", "delete"), ("pods/eviction", "create"), ("nodes", "patch")}
    fanout = next(o for o in _docs("opt-in/rbac-fanout.yaml") if o["kind"] == "ClusterRole")
    assert {(res, v) for r in fanout["rules"] for res in r["resources"] for v in r["verbs"]} == {
        ("daemonsets", "create"), ("daemonsets", "patch"), ("daemonsets", "delete")}
    kustomized = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"]
    assert not any(f.startswith("opt-in/") for f in kustomized) and set(kustomized) == set(files[:5])
    (job,) = _docs("job.yaml")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["serviceAccountName"] == "gpu-conformance" and pod["securityContext"]["runAsNonRoot"] is True
    assert container["args"][:2] == ["job-run", "--report-dir=/reports"]
    after = container["args"][container["args"].index("--") + 1:]
    assert FULL_GATE in after and after[after.index("-m") + 1] == "not disruptive"
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/reports")
    assert next(v for v in pod["volumes"] if v["name"] == mount["name"]) == {"name": mount["name"], "emptyDir": {}}


def test_the_admission_policy_denies_and_binds_to_the_suites_service_account_only() -> None:
    docs = _docs("admission-policy.yaml")
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "ValidatingAdmissionPolicy"}
    bindings = {d["spec"]["policyName"]: d["spec"] for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"}
    assert {d["apiVersion"] for d in docs} == {"admissionregistration.k8s.io/v1"}
    assert set(policies) == set(bindings) == {"gpu-conformance-namespaces", "gpu-conformance-namespaced-writes"}
    for name, spec in policies.items():
        assert spec["failurePolicy"] == "Fail" and bindings[name]["validationActions"] == ["Deny"]
        assert "matchResources" not in bindings[name]  # every namespace, every object
        (cond,) = spec["matchConditions"]
        assert cond["expression"] == f'request.userInfo.username == "{SUITE_USER}"'
        assert all(v["message"].startswith("rule ") and v["reason"] == "Forbidden" for v in spec["validations"])
    (writes,) = policies["gpu-conformance-namespaced-writes"]["matchConstraints"]["resourceRules"]
    assert writes["resources"] == ["*/*"] and writes["apiGroups"] == ["*"] and writes["scope"] == "Namespaced"
    assert set(writes["operations"]) == {"CREATE", "UPDATE", "DELETE"}


# -- against the simulated cluster's real RBAC ----------------------------------------------------


def _apply(api: kr8s.Api, manifests: list[dict[str, Any]], made: list[Any]) -> None:
    for manifest in manifests:
        made.append(create_object(api, manifest))


def _delete(made: list[Any]) -> None:
    for obj in reversed(made):
        try:
            obj.delete()
        except kr8s.NotFoundError:
            pass


def _token_dir(api: kr8s.Api, sim_kubeconfig: Path, namespace: str, account: str, root: Path) -> Path:
    """What the kubelet mounts into the Job's pod: a token from the TokenRequest API, the CA, the namespace."""
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}}
    _, text = wait_for(lambda: api_call(api, "POST", namespace, f"serviceaccounts/{account}/token", 30, request),
                       lambda answer: answer[0] == 201, what=f"a token for {namespace}/{account}", timeout=60)
    ca = (sim_kubeconfig.parent / "pki" / "ca.crt").read_bytes()
    return _sa_dir(root, json.loads(text)["status"]["token"], ca)


def _job_run(sim_api: kr8s.Api, sa_dir: Path, report_dir: Path, *run_args: str) -> tuple[int, str]:
    """`gpu-conformance job-run` as the Job runs it: no kubeconfig, only the pod's environment."""
    host, port = sim_api.auth.server.removeprefix("https://").rsplit(":", 1)
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env.update({incluster.SERVICEACCOUNT_DIR_ENV: str(sa_dir), "KUBERNETES_SERVICE_HOST": host,
                "KUBERNETES_SERVICE_PORT": port, "HOME": str(sa_dir.parent)})
    cmd = [sys.executable, "-m", "gpu_conformance", "job-run", f"--report-dir={report_dir}", "--",
           f"--gpu-node-selector={scenario.SCENARIO_LABEL}=healthy", "--workload-timeout=60", *run_args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def _sa_api(sim_api: kr8s.Api, sa_dir: Path) -> kr8s.Api:
    """A client that authenticates as the service account (its token), as the Job's pod does."""
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "sa",
              "clusters": [{"name": "sim", "cluster": {"server": sim_api.auth.server,
                                                       "certificate-authority": str(sa_dir / "ca.crt")}}],
              "users": [{"name": "sa", "user": {"token": (sa_dir / "token").read_text()}}],
              "contexts": [{"name": "sa", "context": {"cluster": "sim", "user": "sa"}}]}
    path = sa_dir / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return kr8s.api(kubeconfig=str(path))


def _request(api: kr8s.Api, method: str, namespace: str | None, url: str, body: dict[str, Any] | None = None,
             dry_run: bool = False) -> tuple[int, str]:
    """One core-API request: (status, body); with dry_run, admission runs in full but nothing is stored."""

    async def call() -> tuple[int, str]:
        extra: dict[str, Any] = {"json": body} if body is not None else {}
        if dry_run:
            extra["params"] = {"dryRun": "All"}
        async with api.call_api(method, version="v1", base="/api", namespace=namespace, url=url,
                                raise_for_status=False, timeout=30, **extra) as resp:
            return resp.status_code, resp.text

    return as_sync_func(call)()


def _pod(name: str, namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}


def _denied(answer: tuple[int, str], policy: str, rule: str) -> bool:
    """A 403 from the shipped admission policy (by name) with the rule's message."""
    status, text = answer
    message = json.loads(text).get("message", "") if text.startswith("{") else text
    return status == 403 and f"ValidatingAdmissionPolicy '{policy}'" in message and f"rule {rule}:" in message


WRITES, NAMESPACES = "gpu-conformance-namespaced-writes", "gpu-conformance-namespaces"


def _policy_denials(sa: kr8s.Api, unlabelled: str) -> None:
    """(a) With the service account's token: writes outside the suite's namespaces are refused by the policy."""
    answer = _request(sa, "POST", "default", "pods", _pod("gc-policy-probe", "default"))
    assert _denied(answer, WRITES, "namespaced-writes") and "create pods only in namespaces labelled" in answer[1], answer
    assert "namespace default is not" in answer[1]
    answer = _request(sa, "DELETE", None, f"namespaces/{unlabelled}")
    assert _denied(answer, NAMESPACES, "namespace-delete") and f"namespace {unlabelled} is not" in answer[1], answer
    answer = _request(sa, "DELETE", None, "namespaces/kube-node-lease", dry_run=True)  # a system namespace
    assert _denied(answer, NAMESPACES, "namespace-delete") and "namespace kube-node-lease is not" in answer[1], answer
    # kube-system is also immortal (NamespaceLifecycle answers before the policy does): dry run, to be safe.
    assert _request(sa, "DELETE", None, "namespaces/kube-system", dry_run=True)[0] == 403
    answer = _request(sa, "POST", None, "namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                      "metadata": {"generateName": "gc-policy-probe-"}}, dry_run=True)
    assert _denied(answer, NAMESPACES, "namespace-create"), answer
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "gc-policy-probe"}, "stringData": {"k": "v"}}
    for namespace in ("kube-system", "gpu-conformance", unlabelled):
        answer = _request(sa, "POST", namespace, "secrets", secret, dry_run=True)
        assert _denied(answer, WRITES, "namespaced-writes") and f"namespace {namespace} is not" in answer[1], answer


def _opt_in_exemptions(sim_api: kr8s.Api, sa: kr8s.Api, unlabelled: str, made: list[Any]) -> None:
    """With opt-in/rbac-disruptive.yaml applied: a DaemonSet's pod may be deleted and any pod evicted anywhere,
    no other pod deleted outside the suite's namespaces (dry runs: nothing is touched)."""
    _apply(sim_api, _docs("opt-in/rbac-disruptive.yaml"), made)
    plugin = next(p.raw["metadata"] for p in sim_api.get("pods", namespace=kr8s.ALL)  # a device plugin's, say
                  if any(o["kind"] == "DaemonSet" for o in p.raw["metadata"].get("ownerReferences") or []))
    wait_for(lambda: _request(sa, "DELETE", plugin["namespace"], f"pods/{plugin['name']}", dry_run=True),
             lambda answer: answer[0] == 200, what="the opt-in role to take effect", timeout=60)
    answer = _request(sa, "DELETE", unlabelled, "pods/bare", dry_run=True)
    assert _denied(answer, WRITES, "namespaced-writes") and "delete pods only in" in answer[1], answer
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "bare", "namespace": unlabelled},
                "deleteOptions": {"dryRun": ["All"]}}
    answer = _request(sa, "POST", unlabelled, "pods/bare/eviction", eviction, dry_run=True)
    assert answer[0] == 201, answer


def test_the_shipped_rbac_and_admission_policy_run_every_non_disruptive_check(
        sim_kubeconfig: Path, sim_api: kr8s.Api, run_suite: Any, tmp_path: Path) -> None:
    unlabelled = "gc-test-incluster-unlabelled"  # named like the suite's namespaces, without the label
    made: list[Any] = []
    try:
        _apply(sim_api, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": unlabelled}},
                         _pod("bare", unlabelled)], made)
        _apply(sim_api, _docs("namespace.yaml") + _docs("serviceaccount.yaml") + _docs("rbac.yaml")
               + _docs("admission-policy.yaml"), made)
        sa_dir = _token_dir(sim_api, sim_kubeconfig, "gpu-conformance", "gpu-conformance", tmp_path / "sa")
        sa = _sa_api(sim_api, sa_dir)
        # The API server enforces a new policy once its informer has it: wait for the first denial (a dry
        # run, so that nothing is created while it is not yet enforced).
        wait_for(lambda: _request(sa, "POST", "default", "pods", _pod("gc-policy-probe", "default"), dry_run=True),
                 lambda answer: _denied(answer, WRITES, "namespaced-writes"), what="the admission policy enforced",
                 timeout=60, describe=lambda answer: f"HTTP {answer[0]} {answer[1][:300]}")
        _policy_denials(sa, unlabelled)
        code, out = _job_run(sim_api, sa_dir, tmp_path / "in-pod", FULL_GATE, *NOT_DISRUPTIVE)
        _opt_in_exemptions(sim_api, sa, unlabelled, made)
        assert _request(sim_api, "GET", None, f"namespaces/{unlabelled}")[0] == 200  # never deleted
    finally:
        _delete(made)
    # What `gpu-conformance results` fetches from the Job's log: the reports and the exit code.
    log = tmp_path / "job.log"
    log.write_text(out)
    fetched = tmp_path / "fetched"
    fetch = subprocess.run([sys.executable, "-m", "gpu_conformance", "results", f"--log-file={log}", f"--out={fetched}"],
                           capture_output=True, text=True, timeout=60, check=False)
    assert fetch.returncode == code == 0, out[-5000:] + fetch.stderr
    in_pod = json.loads((fetched / "summary.json").read_text())
    assert _tree(fetched) == _tree(tmp_path / "in-pod")
    admin_code, admin, admin_out, _ = run_suite("healthy", FULL_GATE, *NOT_DISRUPTIVE)
    assert admin_code == 0, admin_out[-5000:]
    statuses = {r["nodeid"]: r["status"] for r in in_pod["results"]}
    assert statuses == {r["nodeid"]: r["status"] for r in admin["results"]}
    assert "error" not in statuses.values() and len(statuses) > 50
    # The full gate ran: the notebook (secrets, services, endpointslices) and the privileged check passed.
    passed = {r["id"] for r in in_pod["results"] if r["status"] == "passed"}
    assert {"GPU-NB-001", "GPU-NB-002", "GPU-NB-003", "GPU-MET-005"} <= passed, sorted(passed)
    assert sa_dir.joinpath("token").read_text() not in out  # the token never reaches the log


def test_a_missing_permission_is_an_error_that_names_it(sim_kubeconfig: Path, sim_api: kr8s.Api, tmp_path: Path) -> None:
    namespace = account = "gc-test-incluster-narrow"
    role = copy.deepcopy(next(d for d in _docs("rbac.yaml") if d["kind"] == "ClusterRole"))
    role["metadata"]["name"] = namespace
    pods = next(r for r in role["rules"] if r["resources"] == ["pods"])
    pods["verbs"].remove("create")
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": namespace},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": namespace},
               "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]}
    made: list[Any] = []
    try:
        _apply(sim_api, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
                         {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account, "namespace": namespace}},
                         role, binding], made)
        sa_dir = _token_dir(sim_api, sim_kubeconfig, namespace, account, tmp_path / "sa")
        code, out = _job_run(sim_api, sa_dir, tmp_path / "reports", "-k", "vector_add")
    finally:
        _delete(made)
    assert code == 3, out[-5000:]  # undecided, not a conformance failure
    results = json.loads((tmp_path / "reports" / "summary.json").read_text())["results"]
    assert len(results) == 4 and {r["status"] for r in results} == {"error"}, results
    who = f'User "system:serviceaccount:{namespace}:{account}"'
    assert all(f'{who} cannot create resource "pods" in API group ""' in r["message"] for r in results), results
