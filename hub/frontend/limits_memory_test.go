package frontend

import (
	"math"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/assert"
)

func TestDetectMemoryLimit(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	unset := func() int64 { return math.MaxInt64 }
	tests := []struct {
		name       string
		flag       uint64
		goLimit    func() int64
		files      fstest.MapFS
		want       uint64
		wantSource string
	}{
		{name: "the flag wins", flag: 512 << 20, goLimit: func() int64 { return 1 << 30 },
			files: fstest.MapFS{"proc/self/cgroup": file("0::/\n"), "sys/fs/cgroup/memory.max": file("2147483648\n")},
			want:  512 << 20, wantSource: MemorySourceFlag},
		{name: "GOMEMLIMIT before the cgroup", goLimit: func() int64 { return 1 << 30 },
			files: fstest.MapFS{"proc/self/cgroup": file("0::/\n"), "sys/fs/cgroup/memory.max": file("2147483648\n")},
			want:  1 << 30, wantSource: MemorySourceGOMEMLIMIT},
		{name: "cgroup v2 in its own namespace", goLimit: unset,
			files: fstest.MapFS{"proc/self/cgroup": file("0::/\n"), "sys/fs/cgroup/memory.max": file("1073741824\n")},
			want:  1 << 30, wantSource: MemorySourceCgroup},
		{name: "cgroup v2, a parent is tighter", goLimit: unset,
			files: fstest.MapFS{
				"proc/self/cgroup":                           file("0::/kubepods/pod1/ctr\n"),
				"sys/fs/cgroup/kubepods/pod1/ctr/memory.max": file("max\n"),
				"sys/fs/cgroup/kubepods/pod1/memory.max":     file("805306368\n"),
				"sys/fs/cgroup/kubepods/memory.max":          file("17179869184\n"),
			},
			want: 768 << 20, wantSource: MemorySourceCgroup},
		{name: "cgroup v2 path of the host, the mount is the process's own", goLimit: unset,
			files: fstest.MapFS{"proc/self/cgroup": file("0::/docker/0123abcd\n"), "sys/fs/cgroup/memory.max": file("536870912\n")},
			want:  512 << 20, wantSource: MemorySourceCgroup},
		{name: "cgroup v2 without a limit", goLimit: unset,
			files: fstest.MapFS{"proc/self/cgroup": file("0::/user.slice\n"), "sys/fs/cgroup/user.slice/memory.max": file("max\n")}},
		{name: "cgroup v1", goLimit: unset,
			files: fstest.MapFS{
				"proc/self/cgroup": file("12:cpu,cpuacct:/kubepods/pod1\n5:memory:/kubepods/pod1\n1:name=systemd:/kubepods/pod1\n"),
				"sys/fs/cgroup/memory/kubepods/pod1/memory.limit_in_bytes": file("1073741824\n"),
			},
			want: 1 << 30, wantSource: MemorySourceCgroup},
		{name: "cgroup v1 without a limit", goLimit: unset,
			files: fstest.MapFS{
				"proc/self/cgroup":                           file("5:memory:/\n"),
				"sys/fs/cgroup/memory/memory.limit_in_bytes": file("9223372036854771712\n"),
			}},
		{name: "garbage in the files", goLimit: unset,
			files: fstest.MapFS{"proc/self/cgroup": file("nonsense\n0::/\n"), "sys/fs/cgroup/memory.max": file("lots\n")}},
		{name: "no /proc at all", goLimit: unset, files: fstest.MapFS{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, source := detectMemoryLimit(tc.flag, tc.goLimit, tc.files)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, tc.wantSource, source)
		})
	}
}
