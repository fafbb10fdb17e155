// Package recording records the exec and attach sessions the gateway
// carries as asciicast v2 files (https://docs.asciinema.org/manual/asciicast/v2/),
// one per session, named by the gateway's request id: DIR/ID.cast. A file
// is a JSON header (who, which cluster, pod, container and command) and
// one line per event: output ("o", stdout and stderr as the terminal
// shows them), input ("i", only when stdin recording is on: it may hold
// passwords) and terminal resizes ("r", "COLSxROWS").
//
// The gateway only splices an upgraded connection's bytes; recording taps
// a copy of them in both directions and decodes the remote command
// protocols kubectl speaks: websocket channels (v1–v5.channel.k8s.io and
// their base64 variants: one channel byte before each message) and SPDY/3.1
// (streams named by the streamType header of their SYN_STREAM, decoded with
// github.com/moby/spdystream/spdy). The decoders are incremental and hold
// a bounded state; events wait in a bounded queue for a goroutine that
// writes the file, so a slow disk never slows a session in best-effort
// mode (the recording is abandoned instead), and in required mode slows
// it rather than lose what it said.
//
// Modes: off; best-effort, where a recording that cannot be made is
// logged and counted and the session goes on; required, where a session
// whose file cannot be created is refused and one whose recording fails
// is ended. backhaul_hub_recordings_total{result} counts each outcome.
//
// The package imports no other hub package.
package recording
