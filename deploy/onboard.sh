#!/bin/sh
# onboard.sh installs the Backhaul agent in a member cluster, or removes it.
#
# Run it with the member's kubeconfig, from a checkout or release bundle: it
# applies deploy/agent/overlays/MODE found next to it. POSIX sh (dash, ash,
# bash --posix); needs kubectl, base64, and curl or wget for the wait.
set -eu

PROG=${0##*/}
FIELD_MANAGER=backhaul-onboard
AGENT=backhaul-agent                    # ServiceAccount, RBAC, workload, Secret and ConfigMap
PROPAGATORS=backhaul:propagators        # group the hub pushes objects as; also the binding's name
DEFAULT_NAMESPACE=backhaul-system
POLL_INTERVAL=2

usage() {
	cat <<EOF
Usage: $PROG --hub-url URL --cluster NAME --token TOKEN
           (--hub-ca-data BASE64 | --hub-ca-file FILE) [options]
       $PROG --uninstall [--namespace NS] [--kubeconfig FILE] [--context NAME]

Install the Backhaul agent in the cluster kubectl points at, so that it dials
out to the hub and enrolls with a bootstrap token. \`backhaulctl cluster add\`
prints this command with the values filled in. Safe to run again: it updates
what it installed and keeps the certificate the agent already obtained.

Required:
  --hub-url URL          hub address the agent dials, wss://HOST[:PORT]
  --cluster NAME         this cluster's name on the hub (DNS label)
  --token TOKEN          bootstrap token from the hub (ID.SECRET)
  --hub-ca-data BASE64   base64 of the PEM CA that signed the hub's certificate
  --hub-ca-file FILE     or that CA as a PEM file

Options:
  --mode MODE            deployment (default): an agent Deployment that reaches
                         this cluster's API server; daemonset: one agent per
                         node on the host network, which also lets the hub reach
                         each node's kubelet (edge node pools)
  --image IMAGE          agent image (default backhaul-agent:latest)
  --namespace NS         namespace for the agent (default $DEFAULT_NAMESPACE)
  --kubeconfig FILE      passed to kubectl
  --context NAME         passed to kubectl
  --no-propagation       do not bind group $PROPAGATORS to cluster-admin.
                         The hub pushes Propagation objects into this cluster
                         as user backhaul:hub in group $PROPAGATORS,
                         through the agent; this cluster's RBAC decides what
                         that may do. By default this script binds the group
                         to cluster-admin (ClusterRoleBinding $PROPAGATORS);
                         with this flag, bind a narrower role yourself, or
                         none if the hub only proxies callers.
  --wait-timeout DUR     how long to wait for the agent to connect, checked
                         at the hub's /v1/enroll/status: seconds, or with an
                         s or m suffix (default 300s; 0: do not wait)
  --uninstall            remove the agent: workloads, RBAC, Secret, ConfigMap,
                         the $PROPAGATORS binding this script made, and
                         the namespace if nothing else is left in it
  -h, --help             show this help

Environment:
  KUBECTL                kubectl binary to use (default kubectl)
  HTTPS_PROXY, NO_PROXY  honoured by the status check (curl or wget)

Exit status: 0 done (and connected, when waiting); 1 failed; 2 bad arguments.
EOF
}

# ---- output -----------------------------------------------------------------

step() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() {
	printf '%s: error: %s\n' "$PROG" "$*" >&2
	exit 1
}
usage_error() {
	printf '%s: %s\n' "$PROG" "$*" >&2
	printf "Run '%s --help' for usage.\n" "$PROG" >&2
	exit 2
}
# indent prints a file indented, for kubectl's output under a step.
indent() { sed 's/^/    /' "$1"; }

# matches VALUE ERE: VALUE is one line matching the whole of ERE.
matches() {
	case $1 in *'
'*) return 1 ;; esac
	printf '%s\n' "$1" | grep -Eq "^($2)\$"
}

# ---- arguments --------------------------------------------------------------

HUB_URL=
CLUSTER=
TOKEN=
CA_DATA=
CA_FILE=
MODE=deployment
IMAGE=backhaul-agent:latest
NAMESPACE=$DEFAULT_NAMESPACE
KUBECONFIG_ARG=
CONTEXT=
PROPAGATION=1
WAIT_TIMEOUT=300s
UNINSTALL=0

set_opt() {
	case $1 in
	--hub-url) HUB_URL=$2 ;;
	--cluster) CLUSTER=$2 ;;
	--token) TOKEN=$2 ;;
	--hub-ca-data) CA_DATA=$2 ;;
	--hub-ca-file) CA_FILE=$2 ;;
	--mode) MODE=$2 ;;
	--image) IMAGE=$2 ;;
	--namespace) NAMESPACE=$2 ;;
	--kubeconfig) KUBECONFIG_ARG=$2 ;;
	--context) CONTEXT=$2 ;;
	--wait-timeout) WAIT_TIMEOUT=$2 ;;
	--no-propagation | --uninstall | --help) usage_error "$1 takes no value" ;;
	*) usage_error "unknown option: $1" ;;
	esac
}

while [ $# -gt 0 ]; do
	case $1 in
	-h | --help)
		usage
		exit 0
		;;
	--no-propagation) PROPAGATION=0 ;;
	--uninstall) UNINSTALL=1 ;;
	--*=*) set_opt "${1%%=*}" "${1#*=}" ;;
	--hub-url | --cluster | --token | --hub-ca-data | --hub-ca-file | --mode | --image | \
		--namespace | --kubeconfig | --context | --wait-timeout)
		[ $# -ge 2 ] || usage_error "$1 needs a value"
		set_opt "$1" "$2"
		shift
		;;
	-*) usage_error "unknown option: $1" ;;
	*) usage_error "unexpected argument: $1 (options start with --)" ;;
	esac
	shift
done

# Every problem is reported at once.
ERRORS=
bad() {
	ERRORS="$ERRORS
  $*"
}

if ! matches "$NAMESPACE" '[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?'; then
	bad "--namespace '$NAMESPACE': want a DNS label (lower-case letters, digits, '-')"
fi
if [ "$UNINSTALL" = 0 ]; then
	if [ -z "$HUB_URL" ]; then
		bad "--hub-url is required"
	elif ! matches "$HUB_URL" 'wss://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/%-]*)?|wss://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?(/[A-Za-z0-9._~/%-]*)?'; then
		bad "--hub-url '$HUB_URL': want wss://HOST[:PORT]"
	fi
	if [ -z "$CLUSTER" ]; then
		bad "--cluster is required"
	elif ! matches "$CLUSTER" '[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?'; then
		bad "--cluster '$CLUSTER': want a DNS label (lower-case letters, digits, '-', at most 63)"
	fi
	if [ -z "$TOKEN" ]; then
		bad "--token is required"
	elif ! matches "$TOKEN" '[a-z0-9]{6}\.[a-z0-9]{16}'; then
		# Never echo a token back: it may be a real one with a typo.
		bad "--token: want a bootstrap token, 6 and 16 characters of [a-z0-9] joined by '.'"
	fi
	if [ -n "$CA_DATA" ] && [ -n "$CA_FILE" ]; then
		bad "give --hub-ca-data or --hub-ca-file, not both"
	elif [ -z "$CA_DATA" ] && [ -z "$CA_FILE" ]; then
		bad "--hub-ca-data or --hub-ca-file is required (the CA of the hub's serving certificate)"
	elif [ -n "$CA_FILE" ] && ! [ -r "$CA_FILE" ]; then
		bad "--hub-ca-file '$CA_FILE': not a readable file"
	fi
	case $MODE in
	deployment | daemonset) ;;
	*) bad "--mode '$MODE': want deployment or daemonset" ;;
	esac
	if ! matches "$IMAGE" '[A-Za-z0-9][A-Za-z0-9._/:@-]*'; then
		bad "--image '$IMAGE': not an image reference"
	fi
	if ! matches "$WAIT_TIMEOUT" '(0|[1-9][0-9]{0,5})[sm]?'; then
		bad "--wait-timeout '$WAIT_TIMEOUT': want seconds, e.g. 300 or 300s or 5m (0: do not wait)"
	fi
fi
if [ -n "$ERRORS" ]; then
	printf '%s: invalid arguments:%s\n' "$PROG" "$ERRORS" >&2
	printf "Run '%s --help' for usage.\n" "$PROG" >&2
	exit 2
fi

case $WAIT_TIMEOUT in
*m) WAIT_SECONDS=$((${WAIT_TIMEOUT%m} * 60)) ;;
*s) WAIT_SECONDS=${WAIT_TIMEOUT%s} ;;
*) WAIT_SECONDS=$WAIT_TIMEOUT ;;
esac

# ---- helpers ----------------------------------------------------------------

KUBECTL=${KUBECTL:-kubectl}

# kc runs kubectl against the member with the caller's --kubeconfig/--context.
kc() {
	set -- ${CONTEXT:+"--context=$CONTEXT"} "$@"
	set -- ${KUBECONFIG_ARG:+"--kubeconfig=$KUBECONFIG_ARG"} "$@"
	"$KUBECTL" "$@"
}

# The kubectl flags to print in hints, after the command.
KC_SUFFIX="${KUBECONFIG_ARG:+ --kubeconfig $KUBECONFIG_ARG}${CONTEXT:+ --context $CONTEXT}"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/backhaul-onboard.XXXXXX") || die "cannot create a temporary directory"
trap 'rm -rf "$TMP"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
umask 077

b64() { base64 | tr -d '\n'; }

# sapply applies the manifests in file $1 server-side as this script.
sapply() {
	if ! kc apply --server-side --force-conflicts --field-manager="$FIELD_MANAGER" -f "$1" >"$TMP/apply.out" 2>&1; then
		indent "$TMP/apply.out" >&2
		die "kubectl apply failed"
	fi
	indent "$TMP/apply.out"
}

# managed_by KIND NAME [kubectl flags]: the managed-by label of an object,
# empty if it has none or does not exist.
managed_by() {
	kc get "$@" --ignore-not-found -o 'jsonpath={.metadata.labels.app\.kubernetes\.io/managed-by}' 2>/dev/null || true
}

# ---- prerequisites ----------------------------------------------------------

command -v "$KUBECTL" >/dev/null 2>&1 || die "kubectl not found (install it, or set KUBECTL to its path)"

step "Checking access to the cluster${CONTEXT:+ (context $CONTEXT)}"
if ! kc get --raw=/version --request-timeout=15s >/dev/null 2>"$TMP/version.err"; then
	indent "$TMP/version.err" >&2
	die "kubectl cannot reach the cluster; check --kubeconfig/--context"
fi
WHO=$(kc auth whoami -o 'jsonpath={.status.userInfo.username}' 2>/dev/null || true)
[ -n "$WHO" ] && note "connected as $WHO"

# can_i VERB RESOURCE [kubectl flags]: appends to MISSING when refused.
MISSING=
can_i() {
	if ! kc auth can-i "$@" >/dev/null 2>&1; then
		MISSING="$MISSING
  $*"
	fi
}
check_access() {
	[ -z "$MISSING" ] && return 0
	printf '%s: error: %s may not:%s\n' "$PROG" "${WHO:-this user}" "$MISSING" >&2
	printf 'Run it as a cluster administrator.\n' >&2
	exit 1
}

# ---- uninstall --------------------------------------------------------------

if [ "$UNINSTALL" = 1 ]; then
	for r in deployments.apps daemonsets.apps secrets configmaps serviceaccounts roles rolebindings; do
		can_i delete "$r" -n "$NAMESPACE"
	done
	for r in clusterroles clusterrolebindings namespaces; do
		can_i delete "$r"
	done
	check_access

	step "Removing the Backhaul agent from namespace $NAMESPACE"
	if ! kc -n "$NAMESPACE" delete --ignore-not-found --wait=false \
		"deployment.apps/$AGENT" "daemonset.apps/$AGENT" "secret/$AGENT" "configmap/$AGENT" \
		"rolebinding.rbac.authorization.k8s.io/$AGENT" "role.rbac.authorization.k8s.io/$AGENT" \
		"serviceaccount/$AGENT" >"$TMP/delete.out" 2>&1; then
		indent "$TMP/delete.out" >&2
		die "kubectl delete failed"
	fi
	indent "$TMP/delete.out"

	step "Removing cluster-wide RBAC"
	targets="clusterrolebinding.rbac.authorization.k8s.io/$AGENT clusterrole.rbac.authorization.k8s.io/$AGENT"
	if [ "$(managed_by clusterrolebinding "$PROPAGATORS")" = "$FIELD_MANAGER" ]; then
		targets="$targets clusterrolebinding.rbac.authorization.k8s.io/$PROPAGATORS"
	elif [ -n "$(kc get clusterrolebinding "$PROPAGATORS" --ignore-not-found -o name 2>/dev/null || true)" ]; then
		note "ClusterRoleBinding $PROPAGATORS was not made by $PROG: left as is"
	fi
	# shellcheck disable=SC2086 # targets are fixed names without spaces
	if ! kc delete --ignore-not-found $targets >"$TMP/delete.out" 2>&1; then
		indent "$TMP/delete.out" >&2
		die "kubectl delete failed"
	fi
	indent "$TMP/delete.out"

	case $NAMESPACE in
	default | kube-system | kube-public | kube-node-lease)
		note "namespace $NAMESPACE is a system namespace: kept"
		;;
	*)
		# A hub's host cluster is often a member too: never take the hub
		# (or anything else) down with the agent's namespace.
		left=$(kc -n "$NAMESPACE" get deployments.apps,daemonsets.apps,statefulsets.apps,services,secrets,configmaps,serviceaccounts \
			-o name 2>/dev/null | grep -Ev '^(configmap/kube-root-ca\.crt|serviceaccount/default)$' || true)
		if [ -n "$left" ]; then
			step "Keeping namespace $NAMESPACE: other objects live in it"
			printf '%s\n' "$left" | sed 's/^/    /'
		elif [ -n "$(kc get namespace "$NAMESPACE" --ignore-not-found -o 'jsonpath={.metadata.deletionTimestamp}' 2>/dev/null || true)" ]; then
			step "Namespace $NAMESPACE is already being deleted"
		elif [ -n "$(kc get namespace "$NAMESPACE" --ignore-not-found -o name 2>/dev/null || true)" ]; then
			step "Deleting namespace $NAMESPACE"
			kc delete namespace "$NAMESPACE" --ignore-not-found --wait=false >"$TMP/delete.out" 2>&1 ||
				{ indent "$TMP/delete.out" >&2; die "kubectl delete namespace failed"; }
			indent "$TMP/delete.out"
		fi
		;;
	esac
	step "Done: the Backhaul agent is uninstalled (the hub keeps the cluster's Cluster object until you remove it there)"
	exit 0
fi

# ---- install ----------------------------------------------------------------

command -v base64 >/dev/null 2>&1 || die "base64 not found (coreutils)"
HTTP=
if [ "$WAIT_SECONDS" -gt 0 ]; then
	if command -v curl >/dev/null 2>&1; then
		HTTP=curl
	elif command -v wget >/dev/null 2>&1; then
		HTTP=wget
	else
		die "curl or wget is needed to wait for the agent to connect (or pass --wait-timeout 0)"
	fi
fi

SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd) || die "cannot locate the script's directory"
OVERLAY=$SCRIPT_DIR/agent/overlays/$MODE
[ -f "$OVERLAY/kustomization.yaml" ] ||
	die "manifests not found at $OVERLAY: run $PROG from a Backhaul checkout or release bundle (deploy/onboard.sh beside deploy/agent)"

# The hub's CA, checked before anything is written to the cluster.
if [ -n "$CA_DATA" ]; then
	printf '%s' "$CA_DATA" | base64 -d >"$TMP/hub-ca.crt" 2>/dev/null ||
		die "--hub-ca-data is not valid base64"
else
	cat -- "$CA_FILE" >"$TMP/hub-ca.crt"
fi
grep -q -- '-----BEGIN CERTIFICATE-----' "$TMP/hub-ca.crt" ||
	die "the hub CA (${CA_FILE:---hub-ca-data}) holds no PEM certificate"

if [ "$MODE" = deployment ]; then
	can_i create deployments.apps -n "$NAMESPACE"
	OTHER=daemonset.apps/$AGENT
else
	can_i create daemonsets.apps -n "$NAMESPACE"
	OTHER=deployment.apps/$AGENT
fi
for r in serviceaccounts roles rolebindings configmaps secrets; do
	can_i create "$r" -n "$NAMESPACE"
done
can_i patch secrets -n "$NAMESPACE"
can_i create subjectaccessreviews.authorization.k8s.io
for r in namespaces clusterroles clusterrolebindings; do
	can_i create "$r"
done
# Granting impersonation takes holding it (or the escalate verb).
if ! kc auth can-i escalate clusterroles >/dev/null 2>&1; then
	for r in users groups serviceaccounts uids.authentication.k8s.io userextras.authentication.k8s.io; do
		can_i impersonate "$r"
	done
fi
if [ "$PROPAGATION" = 1 ] && ! kc auth can-i '*' '*' --all-namespaces >/dev/null 2>&1; then
	can_i bind clusterroles/cluster-admin
fi
check_access

step "Rendering the agent ($MODE) from $OVERLAY"
kc kustomize "$OVERLAY" >"$TMP/rendered.yaml" 2>"$TMP/kustomize.err" ||
	{ indent "$TMP/kustomize.err" >&2; die "kubectl kustomize failed"; }
sed -e "s|^\\([[:space:]]*image:\\) backhaul-agent:latest\$|\\1 $IMAGE|" \
	-e "s|^\\([[:space:]]*namespace:\\) $DEFAULT_NAMESPACE\$|\\1 $NAMESPACE|" \
	-e "s|^\\(  name:\\) $DEFAULT_NAMESPACE\$|\\1 $NAMESPACE|" \
	"$TMP/rendered.yaml" >"$TMP/agent.yaml"
grep -q "image: $IMAGE\$" "$TMP/agent.yaml" || die "no agent image found to set in $OVERLAY"
note "image $IMAGE, namespace $NAMESPACE"

step "Applying namespace, service account, RBAC and the $MODE"
sapply "$TMP/agent.yaml"

if [ -n "$(kc -n "$NAMESPACE" get "$OTHER" --ignore-not-found -o name 2>/dev/null || true)" ]; then
	step "Removing the agent's other workload, $OTHER (switched to --mode $MODE)"
	kc -n "$NAMESPACE" delete "$OTHER" --ignore-not-found --wait=false >"$TMP/delete.out" 2>&1 ||
		{ indent "$TMP/delete.out" >&2; die "kubectl delete $OTHER failed"; }
	indent "$TMP/delete.out"
fi

# Server-side apply owns only the keys written here: the tls.crt and tls.key
# the agent adds stay across reruns (with a new token, the agent keeps its
# certificate and enrolls again only if that certificate is unusable).
step "Writing Secret $NAMESPACE/$AGENT (bootstrap token, hub CA)"
{
	printf 'apiVersion: v1\nkind: Secret\ntype: Opaque\nmetadata:\n'
	printf '  name: %s\n  namespace: %s\n' "$AGENT" "$NAMESPACE"
	printf '  labels:\n    app.kubernetes.io/name: %s\n    app.kubernetes.io/part-of: backhaul\n' "$AGENT"
	printf '    app.kubernetes.io/managed-by: %s\n' "$FIELD_MANAGER"
	printf 'data:\n'
	printf '  bootstrap-token: %s\n' "$(printf '%s' "$TOKEN" | b64)"
	printf '  hub-ca.crt: %s\n' "$(b64 <"$TMP/hub-ca.crt")"
} >"$TMP/secret.yaml"
sapply "$TMP/secret.yaml"

step "Writing ConfigMap $NAMESPACE/$AGENT (hub-url, cluster)"
{
	printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n'
	printf '  name: %s\n  namespace: %s\n' "$AGENT" "$NAMESPACE"
	printf '  labels:\n    app.kubernetes.io/name: %s\n    app.kubernetes.io/part-of: backhaul\n' "$AGENT"
	printf '    app.kubernetes.io/managed-by: %s\n' "$FIELD_MANAGER"
	printf 'data:\n  hub-url: "%s"\n  cluster: "%s"\n' "$HUB_URL" "$CLUSTER"
} >"$TMP/configmap.yaml"
sapply "$TMP/configmap.yaml"

if [ "$PROPAGATION" = 1 ]; then
	owner=$(managed_by clusterrolebinding "$PROPAGATORS")
	exists=$(kc get clusterrolebinding "$PROPAGATORS" --ignore-not-found -o name 2>/dev/null || true)
	if [ -n "$exists" ] && [ "$owner" != "$FIELD_MANAGER" ]; then
		step "ClusterRoleBinding $PROPAGATORS exists and was not made by $PROG: left as is"
	else
		step "Binding group $PROPAGATORS to cluster-admin (lets the hub push objects; --no-propagation to skip)"
		cat >"$TMP/propagators.yaml" <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: "$PROPAGATORS"
  labels:
    app.kubernetes.io/part-of: backhaul
    app.kubernetes.io/managed-by: $FIELD_MANAGER
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: cluster-admin
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: Group
  name: "$PROPAGATORS"
EOF
		sapply "$TMP/propagators.yaml"
	fi
elif [ "$(managed_by clusterrolebinding "$PROPAGATORS")" = "$FIELD_MANAGER" ]; then
	step "Removing ClusterRoleBinding $PROPAGATORS made by an earlier run (--no-propagation)"
	kc delete clusterrolebinding "$PROPAGATORS" --ignore-not-found >"$TMP/delete.out" 2>&1 ||
		{ indent "$TMP/delete.out" >&2; die "kubectl delete clusterrolebinding failed"; }
	indent "$TMP/delete.out"
else
	step "Not binding group $PROPAGATORS (--no-propagation): the hub can push only what you grant that group"
fi

if [ "$MODE" = deployment ]; then
	WORKLOAD=deploy/$AGENT
else
	WORKLOAD=ds/$AGENT
fi

if [ "$WAIT_SECONDS" -eq 0 ]; then
	step "Installed. Not waiting for the agent (--wait-timeout 0); check with:"
	note "kubectl -n $NAMESPACE get pods -l app.kubernetes.io/name=$AGENT$KC_SUFFIX"
	note "kubectl -n $NAMESPACE logs $WORKLOAD$KC_SUFFIX"
	exit 0
fi

# ---- wait for the agent -----------------------------------------------------

HUB_REST=${HUB_URL#wss://}
STATUS_URL=https://${HUB_REST%/}/v1/enroll/status

# status_get fetches STATUS_URL into $TMP/status.json and prints the HTTP
# status (000 when there was no answer; the reason is in $TMP/status.err).
# The token goes through a config file, not the command line.
status_get() {
	rm -f "$TMP/status.json" "$TMP/status.err"
	if [ "$HTTP" = curl ]; then
		printf 'header = "Authorization: Bearer %s"\n' "$TOKEN" >"$TMP/curlrc"
		curl -sS --max-time 10 --cacert "$TMP/hub-ca.crt" -K "$TMP/curlrc" \
			-o "$TMP/status.json" -w '%{http_code}' "$STATUS_URL" 2>"$TMP/status.err" || true
	else
		printf 'header = Authorization: Bearer %s\n' "$TOKEN" >"$TMP/wgetrc"
		WGETRC=$TMP/wgetrc wget -q --server-response --content-on-error --tries=1 --timeout=10 \
			--ca-certificate="$TMP/hub-ca.crt" -O "$TMP/status.json" "$STATUS_URL" 2>"$TMP/status.err" || true
		code=$(sed -n 's|^ *HTTP/[0-9.]* \([0-9][0-9][0-9]\).*|\1|p' "$TMP/status.err" | tail -n 1)
		printf '%s' "${code:-000}"
	fi
}

# json_field NAME: a scalar field of the status answer (no jq needed).
json_field() {
	tr -d '\n' <"$TMP/status.json" 2>/dev/null |
		sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\"\\{0,1\\}\\([^\",}]*\\).*/\\1/p"
}

hints() {
	cat >&2 <<EOF

Things to check:
  1. The agent's pods and logs:
       kubectl -n $NAMESPACE get pods -l app.kubernetes.io/name=$AGENT$KC_SUFFIX
       kubectl -n $NAMESPACE logs $WORKLOAD$KC_SUFFIX
  2. Egress: the agent must reach $HUB_URL from this cluster's nodes.
     Behind an egress proxy, set HTTPS_PROXY (and NO_PROXY with the API
     server's address) in the agent's environment.
  3. Token expiry: bootstrap tokens are short-lived. On the hub run
       backhaulctl cluster add $CLUSTER --reissue-token
     and run this script again with the new token.
  4. Enrollment: the agent writes tls.crt and tls.key into Secret
     $NAMESPACE/$AGENT once the hub has signed its certificate.
EOF
	if tls=$(kc -n "$NAMESPACE" get secret "$AGENT" -o 'jsonpath={.data.tls\.crt}' 2>/dev/null); then
		if [ -n "$tls" ]; then
			printf '     Now: the Secret has tls.crt (the agent enrolled; look at its logs and egress).\n' >&2
		else
			printf '     Now: the Secret has no tls.crt yet (the agent has not enrolled).\n' >&2
		fi
	fi
}

step "Waiting up to ${WAIT_SECONDS}s for cluster $CLUSTER to connect ($STATUS_URL)"
deadline=$(($(date +%s) + WAIT_SECONDS))
last=
dots=0
while :; do
	code=$(status_get)
	case $code in
	200)
		if [ "$(json_field connected)" = true ]; then
			[ "$dots" = 1 ] && printf '\n'
			agents=$(json_field agents)
			version=$(json_field agentVersion)
			step "Cluster $CLUSTER is connected to the hub (agents: ${agents:-?}${version:+, agent $version})"
			exit 0
		fi
		state="not connected yet (agents: $(json_field agents))"
		;;
	401)
		[ "$dots" = 1 ] && printf '\n'
		printf '%s: error: the hub refused the token (401): it expired or was revoked.\n' "$PROG" >&2
		printf 'If the agent had already enrolled, check on the hub: kubectl get clusters.backhaul.io %s\n' "$CLUSTER" >&2
		hints
		exit 1
		;;
	000 | '')
		state="no answer from the hub: $(head -n 1 "$TMP/status.err" 2>/dev/null)"
		;;
	*)
		state="the hub answered HTTP $code"
		;;
	esac
	if [ "$state" != "$last" ]; then
		[ "$dots" = 1 ] && printf '\n'
		printf '    %s ' "$state"
		last=$state
		dots=1
	else
		printf '.'
	fi
	[ "$(date +%s)" -lt "$deadline" ] || break
	sleep "$POLL_INTERVAL"
done
printf '\n'
printf '%s: error: cluster %s did not connect within %ss (last: %s)\n' "$PROG" "$CLUSTER" "$WAIT_SECONDS" "$last" >&2
hints
exit 1
