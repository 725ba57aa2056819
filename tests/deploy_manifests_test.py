"""Checks the deployment files under deploy/ against the real binaries.

Every Kubernetes manifest, systemd unit, environment file and shell script
is parsed, required fields are checked, and every flag passed to overlordd,
overlordctl or overlord_pull must appear in that binary's --help output.
Bad copies of the files (an unknown flag, a missing probe, ...) must be
reported, so the checks are known to fail when they should.

Run by tests/deploy_manifests_test.sh, which passes the binaries' paths in
OVERLORDD, OVERLORDCTL and OVERLORD_PULL, the deploy folder in DEPLOY_DIR
and the demo corpora in OVERLORD_DATA_DIR.
"""

import glob
import os
import re
import shlex
import shutil
import random
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import yaml

# Programs whose flags are checked, and the binary whose --help lists them.
# overlord-planner-start passes its arguments on to overlordd.
PROGRAM_HELP = {
    "overlordd": "overlordd",
    "overlord-planner-start": "overlordd",
    "overlordctl": "overlordctl",
    "overlord_pull": "overlord_pull",
}

# Tokens that end one shell command and start the next.
COMMAND_SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", "then", "do", "else"}

# Flags whose next argument is a port the daemon listens on.
PORT_FLAGS = {"--port", "--payload-port", "--metrics-port"}

# Where the example job expects its shards and tokenizer.
JOB_DATA_ROOT = "/srv/overlord/data"

# Flags whose next argument is a credential file that the process reads.
CREDENTIAL_FLAGS = {"--tls-cert", "--tls-key", "--tls-ca", "--curve-secret",
                    "--curve-authorized", "--curve-server-public"}

# Credential flags every overlordd in a manifest needs, by role. Every role
# uses TLS for its CAF links. Only nodes have ZeroMQ sockets, and the
# planner rejects --curve-* flags.
TLS_FLAGS = ("--tls-cert", "--tls-key", "--tls-ca")
CURVE_SERVER_FLAGS = ("--curve-secret", "--curve-authorized")

# Environment variables of a container that name a credential folder.
CREDENTIAL_VARIABLES = {"OVERLORD_TLS_DIR"}

# Where the systemd units' environment file points the credential flags.
SYSTEMD_CREDENTIAL_DIR = "/etc/overlord/tls"

# The CA key signs certificates, and no running process needs it.
CA_KEY_FILE = "ca-key.pem"


def binary_paths():
    return {
        "overlordd": os.environ["OVERLORDD"],
        "overlordctl": os.environ["OVERLORDCTL"],
        "overlord_pull": os.environ["OVERLORD_PULL"],
    }


def help_flags(binary):
    """Return the set of --flags that `binary --help` prints."""
    result = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
    text = result.stdout + result.stderr
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))
    if not flags:
        raise RuntimeError(f"{binary} --help printed no flags: {text!r}")
    return flags


def program_of(token):
    """Return the checked program a shell or argv token runs, or None."""
    name = token.strip("\"'").lstrip("$").strip("{}")
    name = name.rsplit("/", 1)[-1]
    return name if name in PROGRAM_HELP else None


def flag_uses(tokens):
    """Yield (program, flag, following tokens) for each --flag after a checked program."""
    program = None
    for index, token in enumerate(tokens):
        if token in COMMAND_SEPARATORS:
            program = None
            continue
        found = program_of(token)
        if found:
            program = found
            continue
        if program and token.startswith("--"):
            yield program, token, tokens[index + 1:]


class Checker:
    """Collects problems in one copy of the deploy folder."""

    def __init__(self, deploy_dir, helps, overlordd):
        self.deploy_dir = deploy_dir
        self.helps = helps
        self.overlordd = overlordd
        self.problems = []

    def problem(self, path, message):
        self.problems.append(f"{os.path.relpath(path, self.deploy_dir)}: {message}")

    def check_flags(self, path, where, tokens):
        for program, flag, _ in flag_uses(tokens):
            if flag not in self.helps[PROGRAM_HELP[program]]:
                self.problem(path, f"{where}: {program} has no flag {flag} (see {program} --help)")

    def run(self):
        for path in sorted(glob.glob(os.path.join(self.deploy_dir, "kubernetes", "*.yaml"))):
            self.check_kubernetes_file(path)
        for path in sorted(glob.glob(os.path.join(self.deploy_dir, "systemd", "*.service"))):
            self.check_unit(path)
        for path in sorted(glob.glob(os.path.join(self.deploy_dir, "systemd", "*.env"))):
            self.check_environment_file(path)
        for path in self.shell_scripts():
            self.check_shell_script(path)
        self.check_roles_covered()
        return self.problems

    # ---- Kubernetes ----------------------------------------------------

    def job_config(self):
        with open(os.path.join(self.deploy_dir, "job.yaml")) as file:
            return yaml.safe_load(file)

    def check_kubernetes_file(self, path):
        try:
            with open(path) as file:
                documents = [d for d in yaml.safe_load_all(file) if d is not None]
        except yaml.YAMLError as error:
            self.problem(path, f"invalid YAML: {error}")
            return
        if not documents:
            self.problem(path, "holds no Kubernetes object")
        for document in documents:
            self.check_object(path, document)
        self.check_services(path, documents)

    def check_object(self, path, document):
        if not isinstance(document, dict):
            self.problem(path, "a document is not a mapping")
            return
        for key in ("apiVersion", "kind", "metadata"):
            if key not in document:
                self.problem(path, f"object without {key}")
        kind = document.get("kind", "?")
        name = (document.get("metadata") or {}).get("name")
        if not name:
            self.problem(path, f"{kind} without metadata.name")
        where = f"{kind} {name}"

        if kind == "ConfigMap":
            self.check_config_map(path, where, document)
            return
        spec = document.get("spec")
        if not isinstance(spec, dict):
            self.problem(path, f"{where}: spec is missing")
            return
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            self.check_workload(path, where, kind, spec)
        elif kind == "Service":
            if not spec.get("ports"):
                self.problem(path, f"{where}: spec.ports is missing")
            if not spec.get("selector"):
                self.problem(path, f"{where}: spec.selector is missing")
        elif kind == "PersistentVolumeClaim":
            if not spec.get("accessModes"):
                self.problem(path, f"{where}: spec.accessModes is missing")
            if not ((spec.get("resources") or {}).get("requests") or {}).get("storage"):
                self.problem(path, f"{where}: spec.resources.requests.storage is missing")
        elif kind == "NetworkPolicy":
            if "podSelector" not in spec:
                self.problem(path, f"{where}: spec.podSelector is missing")

    def check_config_map(self, path, where, document):
        data = document.get("data")
        if not isinstance(data, dict) or not data:
            self.problem(path, f"{where}: data is missing")
            return
        if "job.yaml" in data:
            with open(os.path.join(self.deploy_dir, "job.yaml")) as file:
                if data["job.yaml"] != file.read():
                    self.problem(path, f"{where}: job.yaml differs from deploy/job.yaml")

    def check_workload(self, path, where, kind, spec):
        template = spec.get("template") or {}
        pod = template.get("spec") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        containers = pod.get("containers") or []
        if not containers:
            self.problem(path, f"{where}: spec.template.spec.containers is missing")
        if kind != "Job":
            selector = (spec.get("selector") or {}).get("matchLabels") or {}
            if not selector:
                self.problem(path, f"{where}: spec.selector.matchLabels is missing")
            for key, value in selector.items():
                if labels.get(key) != value:
                    self.problem(path, f"{where}: selector {key}={value} does not match the pod labels")

        # Sidecars are init containers that keep running (restartPolicy Always).
        # overlordd runs until stopped, so as a plain init container it would
        # keep the pod's other containers from ever starting.
        sidecars = []
        for container in pod.get("initContainers") or []:
            if container.get("restartPolicy") == "Always":
                sidecars.append(container)
                continue
            argv = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
            if any(program_of(token) == "overlordd" for token in argv):
                self.problem(path, f"{where} init container {container.get('name')}: runs overlordd "
                                   f"without restartPolicy: Always, so the pod never gets past it")
        for container in containers + sidecars:
            self.check_container(path, where, container, pod)
        self.check_node_counts(path, where, kind, spec, containers + sidecars)

    def check_container(self, path, where, container, pod):
        name = container.get("name", "?")
        where = f"{where} container {name}"
        if not container.get("image"):
            self.problem(path, f"{where}: image is missing")
        resources = container.get("resources") or {}
        for part in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if not (resources.get(part) or {}).get(resource):
                    self.problem(path, f"{where}: resources.{part}.{resource} is missing")

        argv = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
        if len(argv) >= 3 and argv[0].endswith("sh") and argv[1] == "-c":
            argv = argv[:2] + shlex.split(argv[2])
        self.check_flags(path, where, argv)
        self.check_variables(path, where, container, argv)

        runs_overlord = any(program_of(token) for token in argv)
        if runs_overlord:
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in container:
                    self.problem(path, f"{where}: {probe} is missing")
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe in container:
                self.check_probe(path, f"{where} {probe}", container, container[probe])
        if runs_overlord:
            self.check_ports_listened(path, where, container, argv)
            self.check_security_flags(path, where, argv)
            self.check_probes_avoid_caf(path, where, container, argv)
        self.check_credential_paths(path, where, container, pod, argv)

    def check_variables(self, path, where, container, argv):
        """Kubernetes leaves an undefined $(NAME) in args as it is."""
        defined = {entry.get("name") for entry in container.get("env") or []}
        for token in argv:
            for variable in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", token):
                if variable not in defined:
                    self.problem(path, f"{where}: $({variable}) is not defined in env")

    def check_probe(self, path, where, container, probe):
        handlers = [h for h in ("tcpSocket", "httpGet", "exec", "grpc") if h in probe]
        if len(handlers) != 1:
            self.problem(path, f"{where}: needs exactly one of tcpSocket, httpGet, exec, grpc")
            return
        handler = probe[handlers[0]] or {}
        if handlers[0] == "exec":
            self.check_flags(path, where, [str(a) for a in handler.get("command") or []])
            return
        if handlers[0] == "httpGet" and not handler.get("path"):
            self.problem(path, f"{where}: httpGet.path is missing")
        if self.port_number(container, handler.get("port")) is None:
            self.problem(path, f"{where}: port {handler.get('port')!r} is not a port of the container")

    @staticmethod
    def port_number(container, port):
        for entry in container.get("ports") or []:
            if port in (entry.get("name"), entry.get("containerPort")):
                return entry.get("containerPort")
        return None

    def check_ports_listened(self, path, where, container, argv):
        """Check that the daemon's flags or the job's planner_port open each declared port."""
        listened = set()
        for _, flag, rest in flag_uses(argv):
            if flag in PORT_FLAGS and rest and rest[0].isdigit():
                listened.add(int(rest[0]))
        if any(program_of(token) == "overlord-planner-start" for token in argv):
            listened.add(int(self.job_config().get("planner_port", 0)))
        for entry in container.get("ports") or []:
            if entry.get("containerPort") not in listened:
                self.problem(path, f"{where}: port {entry.get('containerPort')} is declared, but no "
                                   f"--port, --payload-port, --metrics-port or planner_port opens it")

    def planner_port(self, argv):
        """Return the planner_port a planner command line listens on."""
        port = int(self.job_config().get("planner_port", 0))
        for _, flag, rest in flag_uses(argv):
            if flag == "--set" and rest and rest[0].startswith("planner_port="):
                port = int(rest[0].split("=", 1)[1])
        return port

    @staticmethod
    def role_of(argv):
        """Return planner, loader, constructor, all or None for an overlordd command line."""
        if any(program_of(token) == "overlord-planner-start" for token in argv):
            return "planner"
        for _, flag, rest in flag_uses(argv):
            if flag == "--role" and rest:
                return rest[0]
        return None

    def caf_ports(self, argv):
        """Return the CAF (BASP) ports an overlordd command line listens on."""
        ports = set()
        for _, flag, rest in flag_uses(argv):
            if flag == "--port" and rest and rest[0].isdigit():
                ports.add(int(rest[0]))
        if self.role_of(argv) in ("planner", "all"):
            ports.add(self.planner_port(argv))
        return ports

    @staticmethod
    def metrics_ports(argv):
        return {int(rest[0]) for _, flag, rest in flag_uses(argv)
                if flag == "--metrics-port" and rest and rest[0].isdigit()}

    def check_security_flags(self, path, where, argv):
        """Check that CAF links use TLS, node sockets use CURVE and --insecure is absent."""
        flags = {flag for _, flag, _ in flag_uses(argv)}
        role = self.role_of(argv)
        if "--insecure" in flags:
            self.problem(path, f"{where}: --insecure turns off the TLS and CURVE checks; "
                               f"give the --tls-* (and, on nodes, --curve-*) flags instead")
        for flag in TLS_FLAGS:
            if flag not in flags:
                self.problem(path, f"{where}: {flag} is missing, so CAF links have no TLS")
        if role in ("loader", "constructor"):
            for flag in CURVE_SERVER_FLAGS:
                if flag not in flags:
                    self.problem(path, f"{where}: {flag} is missing, so ZeroMQ sockets have no CURVE")
        if role == "planner":
            for flag in sorted(flags):
                if flag.startswith("--curve-"):
                    self.problem(path, f"{where}: the planner rejects {flag}, because it has no "
                                       f"ZeroMQ socket")

    def check_probes_avoid_caf(self, path, where, container, argv):
        """Check that no probe connects to a CAF port and that readiness is GET /healthz.

        A connection that fails its TLS handshake on a CAF 0.17 port makes the
        planner drop its links to the nodes, and a TCP probe is such a
        connection.
        """
        caf = self.caf_ports(argv)
        metrics = self.metrics_ports(argv)
        if not metrics:
            self.problem(path, f"{where}: --metrics-port is missing, so there is no /healthz "
                               f"to probe")
        for name in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = container.get(name)
            if not isinstance(probe, dict):
                continue
            for handler_name in ("tcpSocket", "httpGet", "grpc"):
                handler = probe.get(handler_name)
                if not isinstance(handler, dict):
                    continue
                port = self.port_number(container, handler.get("port"))
                if port in caf:
                    self.problem(path, f"{where} {name}: probes CAF port {port}; every probe "
                                       f"there is a TLS handshake that fails and is logged as "
                                       f"rejected, so probe the metrics port")
                elif port is not None and port not in metrics:
                    self.problem(path, f"{where} {name}: port {port} is not the --metrics-port "
                                       f"{sorted(metrics)}")
        readiness = (container.get("readinessProbe") or {}).get("httpGet")
        if not isinstance(readiness, dict) or readiness.get("path") != "/healthz":
            self.problem(path, f"{where} readinessProbe: must be httpGet on path /healthz")

    def check_credential_paths(self, path, where, container, pod, argv):
        """Check that each credential file lies in a mounted Secret volume that lists it."""
        files = [rest[0] for _, flag, rest in flag_uses(argv) if flag in CREDENTIAL_FLAGS and rest]
        folders = [str(entry.get("value", "")) for entry in container.get("env") or []
                   if entry.get("name") in CREDENTIAL_VARIABLES]
        if not files and not folders:
            return
        volumes = {v.get("name"): v for v in pod.get("volumes") or []}
        mounts = container.get("volumeMounts") or []

        def mount_of(file_path):
            for mount in mounts:
                root = str(mount.get("mountPath", "")).rstrip("/")
                if root and (file_path == root or file_path.startswith(root + "/")):
                    return mount, file_path[len(root):].lstrip("/")
            return None, None

        for folder in folders:
            mount, _ = mount_of(folder)
            if mount is None:
                self.problem(path, f"{where}: credential folder {folder} is not a mounted volume")
        for file_path in files:
            mount, inside = mount_of(file_path)
            if mount is None:
                self.problem(path, f"{where}: credential {file_path} is not under a mounted volume")
                continue
            volume = volumes.get(mount.get("name"))
            if volume is None:
                self.problem(path, f"{where}: volume {mount.get('name')!r} mounted at "
                                   f"{mount.get('mountPath')} is not in the pod's volumes")
                continue
            secret = volume.get("secret")
            if not isinstance(secret, dict):
                self.problem(path, f"{where}: credential {file_path} comes from volume "
                                   f"{mount.get('name')!r}, which is not a Secret")
                continue
            items = secret.get("items")
            if items is not None and inside not in {item.get("path") for item in items}:
                self.problem(path, f"{where}: credential {file_path}: Secret volume "
                                   f"{mount.get('name')!r} has no item with path {inside!r}")
        for volume in volumes.values():
            secret = volume.get("secret")
            if not isinstance(secret, dict):
                continue
            keys = {item.get("key") for item in secret.get("items") or []}
            if secret.get("items") is None or CA_KEY_FILE in keys:
                self.problem(path, f"{where}: Secret volume {volume.get('name')!r} may hold "
                                   f"{CA_KEY_FILE}; list the files it mounts under items")

    def check_node_counts(self, path, where, kind, spec, containers):
        """The planner waits for loader_nodes and constructor_nodes nodes."""
        job = self.job_config()
        for container in containers:
            argv = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
            for role, key in (("loader", "loader_nodes"), ("constructor", "constructor_nodes")):
                if not any(argv[i] == "--role" and argv[i + 1] == role for i in range(len(argv) - 1)):
                    continue
                count = spec.get("parallelism") if kind == "Job" else spec.get("replicas", 1)
                if count != job.get(key, 1):
                    self.problem(path, f"{where}: runs {count} {role} nodes but the job "
                                       f"waits for {key}={job.get(key, 1)}")

    def check_services(self, path, documents):
        templates = []
        for document in documents:
            if isinstance(document, dict) and document.get("kind") in ("Deployment", "StatefulSet"):
                template = (document.get("spec") or {}).get("template") or {}
                templates.append(((template.get("metadata") or {}).get("labels") or {},
                                  (template.get("spec") or {}).get("containers") or []))
        for document in documents:
            if not isinstance(document, dict) or document.get("kind") != "Service":
                continue
            spec = document.get("spec") or {}
            selector = spec.get("selector") or {}
            where = f"Service {document.get('metadata', {}).get('name')}"
            matches = [c for labels, c in templates
                       if selector and all(labels.get(k) == v for k, v in selector.items())]
            if not matches:
                self.problem(path, f"{where}: selector matches no pod template in this file")
                continue
            for port in spec.get("ports") or []:
                target = port.get("targetPort", port.get("port"))
                if not any(self.port_number(c, target) for c in matches[0]):
                    self.problem(path, f"{where}: targetPort {target!r} is not a port of its pods")

    # ---- systemd -------------------------------------------------------

    @staticmethod
    def parse_unit(path):
        sections = {}
        current = None
        with open(path) as file:
            for number, line in enumerate(file, 1):
                line = line.strip()
                if not line or line[0] in "#;":
                    continue
                if line.startswith("[") and line.endswith("]"):
                    current = sections.setdefault(line[1:-1], {})
                    continue
                if current is None or "=" not in line:
                    raise ValueError(f"line {number}: expected [Section] or Key=Value")
                key, value = line.split("=", 1)
                current.setdefault(key.strip(), []).append(value.strip())
        return sections

    def check_unit(self, path):
        try:
            sections = self.parse_unit(path)
        except ValueError as error:
            self.problem(path, str(error))
            return
        unit = sections.get("Unit", {})
        service = sections.get("Service", {})
        install = sections.get("Install", {})
        if not unit.get("Description"):
            self.problem(path, "[Unit] Description is missing")
        if not service.get("ExecStart"):
            self.problem(path, "[Service] ExecStart is missing")
        if service.get("Restart", [""])[-1] not in ("on-failure", "always", "on-abnormal"):
            self.problem(path, "[Service] Restart must be on-failure, on-abnormal or always")
        for limit in ("MemoryMax", "CPUQuota", "LimitNOFILE"):
            if not service.get(limit):
                self.problem(path, f"[Service] resource limit {limit} is missing")
        if not install.get("WantedBy"):
            self.problem(path, "[Install] WantedBy is missing")

        for command in service.get("ExecStart", []):
            tokens = shlex.split(command.lstrip("@-:+!"))
            self.check_flags(path, "ExecStart", tokens)
            self.check_host_security(path, "ExecStart", tokens)
            has_config = "--config" in tokens or any(
                program_of(token) == "overlord-planner-start" for token in tokens)
            if not has_config and not service.get("EnvironmentFile"):
                self.problem(path, "ExecStart names no --config and the unit has no EnvironmentFile")
        self.verify_unit(path)

    def verify_unit(self, path):
        """Run systemd-analyze verify with the commands pointed at real files."""
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            self.problem(path, "systemd-analyze is missing (install systemd)")
            return
        with open(path) as file:
            text = file.read()
        text = text.replace("/usr/local/bin/overlordd", os.path.abspath(self.overlordd))
        text = text.replace("/usr/local/bin/overlord-planner-start",
                            os.path.abspath(os.path.join(self.deploy_dir, "bin", "overlord-planner-start")))
        with tempfile.TemporaryDirectory() as folder:
            copy = os.path.join(folder, os.path.basename(path))
            with open(copy, "w") as file:
                file.write(text)
            result = subprocess.run([analyze, "verify", copy], capture_output=True, text=True,
                                    timeout=60)
        output = (result.stdout + result.stderr).strip()
        if result.returncode != 0 or output:
            self.problem(path, f"systemd-analyze verify: {output or result.returncode}")

    def check_environment_file(self, path):
        with open(path) as file:
            for number, line in enumerate(file, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if "=" not in line:
                    self.problem(path, f"line {number}: expected NAME=VALUE")
                    continue
                name, value = line.split("=", 1)
                # Extra flags for a unit's ExecStart, which runs overlordd.
                if name.endswith("_ARGS"):
                    tokens = ["overlordd"] + shlex.split(value)
                    self.check_flags(path, name, tokens)
                    self.check_host_security(path, name, tokens)
                    self.check_role_credentials(path, name, tokens)

    def check_host_security(self, path, where, tokens):
        """Check that credentials lie in SYSTEMD_CREDENTIAL_DIR and that --insecure is absent."""
        for _, flag, rest in flag_uses(tokens):
            if flag == "--insecure":
                self.problem(path, f"{where}: --insecure turns off the TLS and CURVE checks")
            if flag in CREDENTIAL_FLAGS and rest and not rest[0].startswith(SYSTEMD_CREDENTIAL_DIR + "/"):
                self.problem(path, f"{where}: {flag} {rest[0]} is not under {SYSTEMD_CREDENTIAL_DIR}")

    def check_role_credentials(self, path, name, tokens):
        """Check that OVERLORD_ROLE_ARGS give TLS flags to all roles and CURVE flags to nodes."""
        role = name[len("OVERLORD_"):-len("_ARGS")].lower()
        flags = {flag for _, flag, _ in flag_uses(tokens)}
        for flag in TLS_FLAGS:
            if flag not in flags:
                self.problem(path, f"{name}: {flag} is missing, so CAF links have no TLS")
        for flag in CURVE_SERVER_FLAGS:
            if role in ("loader", "constructor") and flag not in flags:
                self.problem(path, f"{name}: {flag} is missing, so ZeroMQ sockets have no CURVE")
        if role == "planner" and any(flag.startswith("--curve-") for flag in flags):
            self.problem(path, f"{name}: the planner rejects --curve-* flags")

    # ---- Shell scripts ---------------------------------------------------

    def shell_scripts(self):
        scripts = []
        for root, _, files in os.walk(self.deploy_dir):
            for name in files:
                path = os.path.join(root, name)
                with open(path, "rb") as file:
                    first = file.readline()
                if first.startswith(b"#!") and (b"sh" in first.split(b"/")[-1]):
                    scripts.append(path)
        return sorted(scripts)

    def check_shell_script(self, path):
        with open(path) as file:
            shebang = file.readline()
        shell = "bash" if "bash" in shebang else "sh"
        result = subprocess.run([shell, "-n", path], capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            self.problem(path, f"{shell} -n: {result.stderr.strip()}")
            return
        for number, command in self.logical_lines(path):
            try:
                tokens = shlex.split(command, comments=True)
            except ValueError as error:
                self.problem(path, f"line {number}: cannot split into words: {error}")
                continue
            spaced = []
            for token in tokens:
                # A trailing ; or & ends the command, as in `cmd &`.
                if len(token) > 1 and token[-1] in ";&":
                    spaced += [token[:-1], token[-1]]
                else:
                    spaced.append(token)
            self.check_flags(path, f"line {number}", spaced)

    @staticmethod
    def logical_lines(path):
        """Yield (first line number, text) with backslash continuations joined."""
        pending, start = "", None
        with open(path) as file:
            for number, line in enumerate(file, 1):
                line = line.rstrip("\n")
                if start is None:
                    start = number
                if line.endswith("\\"):
                    pending += line[:-1] + " "
                    continue
                yield start, pending + line
                pending, start = "", None
        if pending:
            yield start, pending

    # ---- Coverage --------------------------------------------------------

    def check_roles_covered(self):
        for role in ("planner", "loader", "constructor"):
            unit = os.path.join(self.deploy_dir, "systemd", f"overlord-{role}.service")
            if not os.path.exists(unit):
                self.problem(unit, f"the {role} has no systemd unit")
        if not glob.glob(os.path.join(self.deploy_dir, "slurm", "*.sbatch")):
            self.problem(os.path.join(self.deploy_dir, "slurm"), "no Slurm batch script")


def check_deploy(deploy_dir, helps, overlordd):
    """Return the problems found in a deploy folder, one line each."""
    return Checker(deploy_dir, helps, overlordd).run()


def free_port():
    """Return a free port below the kernel's ephemeral range.

    Outgoing connections and servers bound to port 0 take ports from that
    range at any moment, so a port there that is free now may be taken
    before the test binds it.
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    for _ in range(200):
        port = random.randint(20000, max(20001, ephemeral_low - 1))
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


class DeployFilesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.deploy_dir = os.environ["DEPLOY_DIR"]
        cls.binaries = binary_paths()
        cls.helps = {name: help_flags(path) for name, path in cls.binaries.items()}

    def setUp(self):
        self.scratch = tempfile.mkdtemp(prefix="deploy-test.")
        self.copy = os.path.join(self.scratch, "deploy")
        shutil.copytree(self.deploy_dir, self.copy, symlinks=False)

    def tearDown(self):
        shutil.rmtree(self.scratch, ignore_errors=True)

    def edit(self, relative, old, new):
        """Replace one occurrence of old in a file of the copy."""
        path = os.path.join(self.copy, relative)
        with open(path) as file:
            text = file.read()
        self.assertIn(old, text, f"{relative} no longer contains {old!r}; update the test")
        with open(path, "w") as file:
            file.write(text.replace(old, new, 1))

    def assert_problem(self, *fragments):
        problems = check_deploy(self.copy, self.helps, self.binaries["overlordd"])
        matching = [p for p in problems if all(f in p for f in fragments)]
        self.assertTrue(matching, f"no problem mentions {fragments}; problems: {problems}")

    # ---- The real files --------------------------------------------------

    def test_deploy_files_pass(self):
        self.assertEqual(check_deploy(self.deploy_dir, self.helps, self.binaries["overlordd"]), [])

    def test_help_lists_flags(self):
        for flag in ("--role", "--planner", "--bind", "--port", "--payload-port", "--node-id",
                     "--insecure", "--config", "--set", "--metrics-port", "--tls-cert",
                     "--tls-key", "--tls-ca", "--curve-secret", "--curve-authorized"):
            self.assertIn(flag, self.helps["overlordd"])

    def test_units_on_one_host_have_own_node_ids(self):
        """The loader and constructor units can share a host and its env file."""
        ids = {}
        for role in ("loader", "constructor"):
            path = os.path.join(self.deploy_dir, "systemd", f"overlord-{role}.service")
            with open(path) as file:
                found = re.search(r"--node-id (\S+)", file.read())
            self.assertIsNotNone(found, f"{path} sets no --node-id")
            ids[role] = found.group(1)
        self.assertNotEqual(ids["loader"], ids["constructor"])

    def test_every_role_deployed(self):
        commands = []
        for path in glob.glob(os.path.join(self.deploy_dir, "kubernetes", "*.yaml")):
            with open(path) as file:
                commands.append(file.read())
        text = "\n".join(commands)
        self.assertIn("overlord-planner-start", text)
        self.assertRegex(text, r"- --role\n\s+- loader")
        self.assertRegex(text, r"- --role\n\s+- constructor")

    def test_job_file_loads(self):
        """deploy/job.yaml starts overlordd once its paths point at the demo corpora."""
        data = os.environ.get("OVERLORD_DATA_DIR", "")
        self.assertTrue(os.path.isfile(os.path.join(data, "gpt2", "encoder.json")),
                        "OVERLORD_DATA_DIR must name the demo data folder (scripts/fetch-demo-data)")
        with open(os.path.join(self.deploy_dir, "job.yaml")) as file:
            job = yaml.safe_load(file)

        def local(path):
            self.assertTrue(path.startswith(JOB_DATA_ROOT), path)
            return data + path[len(JOB_DATA_ROOT):]

        command = [self.binaries["overlordd"], "--role", "all",
                   "--config", os.path.join(self.deploy_dir, "job.yaml"),
                   "--set", f"tokenizer={local(job['tokenizer'])}",
                   "--set", "bind=127.0.0.1", "--set", "planner_port=0",
                   "--set", "loader_nodes=1", "--set", "constructor_nodes=1",
                   "--set", f"base_port={free_port()}",
                   "--set", f"checkpoint_dir={os.path.join(self.scratch, 'checkpoints')}"]
        for source in job["sources"]:
            command += ["--set", f"sources.{source['name']}.paths={local(source['paths'])}"]
        log_path = os.path.join(self.scratch, "overlordd.log")
        with open(log_path, "w") as log:
            daemon = subprocess.Popen(command, stderr=log, stdout=log)
        try:
            started = False
            for _ in range(300):
                with open(log_path) as file:
                    # The line reads "node started: role=all ..." or, with the
                    # node id in front, "node=ID started: role=all ...".
                    if "started: role=all" in file.read():
                        started = True
                        break
                if daemon.poll() is not None:
                    break
                time.sleep(0.1)
        finally:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
            status = daemon.wait(timeout=30)
        with open(log_path) as file:
            log_text = file.read()
        self.assertTrue(started, f"overlordd did not start with deploy/job.yaml:\n{log_text}")
        self.assertEqual(status, 0, log_text)

    # ---- Bad copies must be reported ---------------------------------------

    def test_unknown_flag_in_kubernetes(self):
        self.edit("kubernetes/loader.yaml", "- --node-id", "- --no-such-flag")
        self.assert_problem("loader.yaml", "--no-such-flag")

    def test_flag_with_equals_in_kubernetes(self):
        # overlordd takes `--planner HOST:PORT`, not `--planner=HOST:PORT`.
        self.edit("kubernetes/trainer.yaml", "- --planner\n            - overlord-planner:7070",
                  "- --planner=overlord-planner:7070")
        self.assert_problem("trainer.yaml", "--planner=overlord-planner:7070")

    def test_unknown_flag_in_unit(self):
        self.edit("systemd/overlord-loader.service", "--payload-port 7072", "--payload-prot 7072")
        self.assert_problem("overlord-loader.service", "--payload-prot")

    def test_unknown_flag_in_environment_file(self):
        self.edit("systemd/overlord.env", "OVERLORD_LOADER_ARGS=--tls-cert",
                  "OVERLORD_LOADER_ARGS=--threads 4 --tls-cert")
        self.assert_problem("overlord.env", "--threads")

    def test_unknown_flag_in_slurm_script(self):
        self.edit("slurm/overlord-node", '--node-id "$node_id"', '--nodeid "$node_id"')
        self.assert_problem("overlord-node", "--nodeid")

    def test_unknown_flag_to_planner_start(self):
        self.edit("slurm/overlord-node", '--set bind="$address"', '--bind-all --set bind="$address"')
        self.assert_problem("overlord-node", "--bind-all")

    def test_missing_resources(self):
        self.edit("kubernetes/planner.yaml", "          resources:\n            requests:\n"
                  "              cpu: \"1\"", "          resourcez:\n            requests:\n"
                  "              cpu: \"1\"")
        self.assert_problem("planner.yaml", "container planner", "resources.requests.cpu")

    def test_missing_probe(self):
        self.edit("kubernetes/loader.yaml", "livenessProbe:", "startupProbe:")
        self.assert_problem("loader.yaml", "livenessProbe is missing")

    def test_probe_on_undeclared_port(self):
        self.edit("kubernetes/trainer.yaml", "tcpSocket:\n              port: metrics",
                  "tcpSocket:\n              port: admin")
        self.assert_problem("trainer.yaml", "'admin' is not a port of the container")

    def test_probe_on_planner_caf_port(self):
        self.edit("kubernetes/planner.yaml", "tcpSocket:\n              port: metrics",
                  "tcpSocket:\n              port: planner")
        self.assert_problem("planner.yaml", "livenessProbe", "probes CAF port 7070")

    def test_probe_on_node_caf_port(self):
        self.edit("kubernetes/loader.yaml", "tcpSocket:\n              port: metrics",
                  "tcpSocket:\n              port: node")
        self.assert_problem("loader.yaml", "livenessProbe", "probes CAF port 7071")

    def test_probe_on_payload_port(self):
        self.edit("kubernetes/loader.yaml", "tcpSocket:\n              port: metrics",
                  "tcpSocket:\n              port: payload")
        self.assert_problem("loader.yaml", "livenessProbe", "port 7072 is not the --metrics-port")

    def test_readiness_not_healthz(self):
        self.edit("kubernetes/trainer.yaml", "path: /healthz", "path: /metrics")
        self.assert_problem("trainer.yaml", "readinessProbe", "httpGet on path /healthz")

    def test_metrics_port_missing(self):
        self.edit("kubernetes/loader.yaml", "            - --metrics-port\n            - \"9401\"\n", "")
        self.assert_problem("loader.yaml", "--metrics-port is missing")

    def test_insecure_in_manifest(self):
        self.edit("kubernetes/loader.yaml", "            - $(POD_NAME)\n",
                  "            - $(POD_NAME)\n            - --insecure\n")
        self.assert_problem("loader.yaml", "--insecure turns off")

    def test_tls_flag_missing(self):
        self.edit("kubernetes/planner.yaml", "            - --tls-ca\n            - /etc/overlord-tls/ca.pem\n", "")
        self.assert_problem("planner.yaml", "--tls-ca is missing")

    def test_curve_missing_on_constructor(self):
        self.edit("kubernetes/trainer.yaml",
                  "            - --curve-authorized\n            - /etc/overlord-tls/curve-authorized\n", "")
        self.assert_problem("trainer.yaml", "container constructor", "--curve-authorized is missing")

    def test_curve_on_planner(self):
        self.edit("kubernetes/planner.yaml", "            - --metrics-port\n",
                  "            - --curve-secret\n            - /etc/overlord-tls/planner.pem\n"
                  "            - --metrics-port\n")
        self.assert_problem("planner.yaml", "planner rejects --curve-secret")

    def test_tls_cert_outside_volume(self):
        self.edit("kubernetes/planner.yaml", "- /etc/overlord-tls/planner.pem", "- /run/secrets/planner.pem")
        self.assert_problem("planner.yaml", "/run/secrets/planner.pem is not under a mounted volume")

    def test_tls_cert_in_config_map(self):
        self.edit("kubernetes/loader.yaml", "- /etc/overlord-tls/node.pem", "- /srv/overlord/data/node.pem")
        self.assert_problem("loader.yaml", "volume 'corpus', which is not a Secret")

    def test_secret_volume_missing(self):
        self.edit("kubernetes/loader.yaml", "        - name: tls\n          secret:",
                  "        - name: tls-old\n          secret:")
        self.assert_problem("loader.yaml", "volume 'tls' mounted at /etc/overlord-tls is not in the pod's volumes")

    def test_secret_item_missing(self):
        self.edit("kubernetes/trainer.yaml",
                  "              - key: node.curve-secret\n                path: node.curve-secret\n", "")
        self.assert_problem("trainer.yaml", "no item with path 'node.curve-secret'")

    def test_trainer_credential_folder_unmounted(self):
        self.edit("kubernetes/trainer.yaml", "value: /etc/overlord-tls", "value: /etc/overlord/tls")
        self.assert_problem("trainer.yaml", "container trainer", "/etc/overlord/tls is not a mounted volume")

    def test_ca_key_mounted(self):
        self.edit("kubernetes/planner.yaml", "            items:\n",
                  "            items:\n              - key: ca-key.pem\n                path: ca-key.pem\n")
        self.assert_problem("planner.yaml", "may hold ca-key.pem")

    def test_insecure_in_environment_file(self):
        self.edit("systemd/overlord.env", "OVERLORD_PLANNER_ARGS=", "OVERLORD_PLANNER_ARGS=--insecure ")
        self.assert_problem("overlord.env", "OVERLORD_PLANNER_ARGS", "--insecure turns off")

    def test_unit_credential_outside_tls_dir(self):
        self.edit("systemd/overlord.env", "--tls-key /etc/overlord/tls/node-key.pem",
                  "--tls-key /home/overlord/node-key.pem")
        self.assert_problem("overlord.env", "OVERLORD_LOADER_ARGS", "not under /etc/overlord/tls")

    def test_curve_on_planner_unit(self):
        self.edit("systemd/overlord.env", "OVERLORD_PLANNER_ARGS=",
                  "OVERLORD_PLANNER_ARGS=--curve-secret /etc/overlord/tls/node.curve-secret ")
        self.assert_problem("overlord.env", "OVERLORD_PLANNER_ARGS", "planner rejects --curve-*")

    def test_port_not_listened(self):
        self.edit("kubernetes/loader.yaml", "containerPort: 7072", "containerPort: 7074")
        self.assert_problem("loader.yaml", "port 7074 is declared")

    def test_undefined_variable(self):
        self.edit("kubernetes/loader.yaml", "- name: POD_NAME", "- name: POD_NAME_")
        self.assert_problem("loader.yaml", "$(POD_NAME) is not defined")

    def test_replicas_differ_from_job(self):
        self.edit("kubernetes/loader.yaml", "replicas: 2", "replicas: 3")
        self.assert_problem("loader.yaml", "runs 3 loader nodes", "loader_nodes=2")

    def test_config_map_out_of_sync(self):
        self.edit("job.yaml", "seed: 1234", "seed: 99")
        self.assert_problem("job-config.yaml", "differs from deploy/job.yaml")

    def test_service_without_pods(self):
        self.edit("kubernetes/planner.yaml", "targetPort: planner", "targetPort: admin")
        self.assert_problem("planner.yaml", "targetPort 'admin'")

    def test_object_without_kind(self):
        self.edit("kubernetes/corpus.yaml", "kind: PersistentVolumeClaim\n", "")
        self.assert_problem("corpus.yaml", "object without kind")

    def test_sidecar_without_restart_policy(self):
        self.edit("kubernetes/trainer.yaml", "          restartPolicy: Always\n", "")
        self.assert_problem("trainer.yaml", "init container constructor", "restartPolicy: Always")

    def test_unit_without_exec_start(self):
        self.edit("systemd/overlord-planner.service", "ExecStart=", "ExecStartPost=")
        self.assert_problem("overlord-planner.service", "ExecStart is missing")

    def test_unit_unknown_key(self):
        self.edit("systemd/overlord-constructor.service", "RestartSec=5", "RestartSecs=5")
        self.assert_problem("overlord-constructor.service", "systemd-analyze verify", "RestartSecs")

    def test_shell_syntax_error(self):
        self.edit("slurm/overlord.sbatch", "  sleep 1\ndone", "  sleep 1\n")
        self.assert_problem("overlord.sbatch", "bash -n")


class PlannerStartTest(unittest.TestCase):
    """overlord-planner-start picks --recover once a snapshot exists."""

    def setUp(self):
        self.scratch = tempfile.mkdtemp(prefix="planner-start.")
        self.job = os.path.join(self.scratch, "job.yaml")
        with open(self.job, "w") as file:
            file.write("seed: 1\n")
        # Stands in for overlordd and prints the arguments it was given.
        self.recorder = os.path.join(self.scratch, "overlordd")
        with open(self.recorder, "w") as file:
            file.write('#!/bin/sh\nprintf "%s\\n" "$@"\n')
        os.chmod(self.recorder, 0o755)
        self.checkpoints = os.path.join(self.scratch, "checkpoints")
        self.script = os.path.join(os.environ["DEPLOY_DIR"], "bin", "overlord-planner-start")

    def tearDown(self):
        shutil.rmtree(self.scratch, ignore_errors=True)

    def run_script(self, job=None):
        env = dict(os.environ, OVERLORDD=self.recorder, OVERLORD_JOB=job or self.job,
                   OVERLORD_CHECKPOINT_DIR=self.checkpoints)
        return subprocess.run([self.script, "--insecure"], env=env, capture_output=True,
                              text=True, timeout=30)

    def test_first_start_sets_checkpoint_dir(self):
        result = self.run_script()
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.split("\n")[:-1],
                         ["--role", "planner", "--config", self.job, "--set",
                          f"checkpoint_dir={self.checkpoints}", "--insecure"])

    def test_restart_recovers(self):
        os.makedirs(self.checkpoints)
        open(os.path.join(self.checkpoints, "snapshot-00000000000000000100.ovck"), "w").close()
        result = self.run_script()
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.split("\n")[:-1],
                         ["--role", "planner", "--config", self.job, "--resume",
                          self.checkpoints, "--recover", "--insecure"])

    def test_partial_snapshot_ignored(self):
        os.makedirs(self.checkpoints)
        open(os.path.join(self.checkpoints, "snapshot-00000000000000000100.ovck.tmp"), "w").close()
        result = self.run_script()
        self.assertNotIn("--recover", result.stdout)

    def test_missing_job_file(self):
        result = self.run_script(job=os.path.join(self.scratch, "missing.yaml"))
        self.assertEqual(result.returncode, 2)
        self.assertIn("cannot read the job configuration", result.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
