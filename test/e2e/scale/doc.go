// Package scale measures Propagation at fleet size: a real backhaul-hub
// process pushing 1,000 Propagations to 20 members through real agents'
// tunnels, on one machine. Members are cheap: their API servers share one
// etcd, each under its own --etcd-prefix, but each still runs in its own
// network namespace that refuses inbound connections, so the hub reaches
// it only through its agent. It prints BENCH lines and fails only when
// something does not converge at all.
//
// It is a benchmark, not a test suite: its files build only with the tag
// bench, so `make test` neither runs nor skips it. `make bench` runs
//
//	go test -tags bench -count=1 -v -timeout 60m -run TestPropagationScale ./test/e2e/scale/
package scale
