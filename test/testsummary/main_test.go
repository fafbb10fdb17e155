package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestSummarize(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"run","Package":"p","Test":"TestOK"}`,
		`{"Action":"output","Package":"p","Test":"TestOK","Output":"=== RUN   TestOK\n"}`,
		`{"Action":"pass","Package":"p","Test":"TestOK"}`,
		`{"Action":"output","Package":"p","Test":"TestSkip","Output":"    x_test.go:9: missing dash\n"}`,
		`{"Action":"skip","Package":"p","Test":"TestSkip"}`,
		`{"Action":"output","Package":"p","Test":"TestBad/case","Output":"    x_test.go:20: want 1, got 2\n"}`,
		`{"Action":"fail","Package":"p","Test":"TestBad/case"}`,
		`{"Action":"output","Package":"p","Test":"TestBad","Output":"--- FAIL: TestBad (0.00s)\n"}`,
		`{"Action":"fail","Package":"p","Test":"TestBad"}`,
		`{"Action":"output","Package":"p","Output":"FAIL\tp\t0.1s\n"}`,
		`{"Action":"fail","Package":"p"}`,
		`not json`,
	}, "\n")
	var out strings.Builder
	failed := summarize(strings.NewReader(in), &out)
	assert.True(t, failed)
	assert.Equal(t, "    x_test.go:9: missing dash\n"+
		"    x_test.go:20: want 1, got 2\n"+
		"--- FAIL: TestBad (0.00s)\n"+
		"FAIL\tp\t0.1s\n"+
		"   p: 2 tests ran: 1 passed, 1 skipped, 1 failed\n"+
		"not json\n", out.String())
}
