// Command testsummary runs `go test -json ...` and prints what plain `go
// test` prints (each package's result, and the output of tests that
// failed), plus how many tests each package ran, passed, skipped and
// failed. An e2e suite that skipped everything, or ran nothing, is then
// visible in the CI log instead of passing as "ok".
//
//	go run ./test/testsummary go test -json -count=1 ./test/...
//
// It exits non-zero when the command does, or when any test failed.
// (gotestsum does this and more; this is the few lines the Makefile needs,
// without another tool to install.)
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// event is one line of test2json output.
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

// pkg is what one package's tests did.
type pkg struct {
	passed, failed, skipped int
	output                  map[string][]string // a running test's lines
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: testsummary go test -json [flags] [packages]")
		os.Exit(2)
	}
	cmd := exec.Command(os.Args[1], os.Args[2:]...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(2)
	}
	failed := summarize(out, os.Stdout)
	if err := cmd.Wait(); err != nil || failed {
		os.Exit(1)
	}
}

// summarize reads test2json events from r and writes the summary to w; it
// says whether any test or package failed.
func summarize(r io.Reader, w io.Writer) (failed bool) {
	pkgs := map[string]*pkg{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) != nil || e.Action == "" {
			fmt.Fprintln(w, sc.Text()) // not an event: pass it on
			continue
		}
		p := pkgs[e.Package]
		if p == nil {
			p = &pkg{output: map[string][]string{}}
			pkgs[e.Package] = p
		}
		switch {
		case e.Test == "" && e.Action == "output":
			fmt.Fprint(w, e.Output) // TestMain, build errors, "ok pkg 1.2s"
		case e.Test == "" && (e.Action == "pass" || e.Action == "fail" || e.Action == "skip"):
			failed = failed || e.Action == "fail"
			fmt.Fprintf(w, "   %s: %d tests ran: %d passed, %d skipped, %d failed\n",
				e.Package, p.passed+p.failed, p.passed, p.skipped, p.failed)
			delete(pkgs, e.Package)
		case e.Action == "output":
			p.output[e.Test] = append(p.output[e.Test], e.Output)
		case e.Action == "pass" || e.Action == "fail" || e.Action == "skip":
			// Print what a failed or skipped test said (a subtest's lines
			// are its own, not its parent's); count top-level tests only.
			if e.Action != "pass" {
				fmt.Fprint(w, strings.Join(p.output[e.Test], ""))
			}
			failed = failed || e.Action == "fail"
			if !strings.Contains(e.Test, "/") {
				switch e.Action {
				case "pass":
					p.passed++
				case "fail":
					p.failed++
				case "skip":
					p.skipped++
				}
			}
			delete(p.output, e.Test)
		}
	}
	return failed
}
