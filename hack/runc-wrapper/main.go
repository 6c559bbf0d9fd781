// Command runc-wrapper runs runc with every container's oom_score_adj clamped to 0 or above.
//
// The test bed's real node runs on VMs without CAP_SYS_RESOURCE: lowering a process's
// oom_score_adj below 0 is refused there, and runc fails any container that asks for it (the
// kubelet asks -998 for pod sandboxes) with "can't get final child's PID from pipe: EOF".
// containerd calls this program instead of runc (the runtime's BinaryName); it rewrites the
// bundle's config.json (create, run) or the process file (exec) and then becomes runc.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

const defaultRunc = "/usr/sbin/runc"

func main() {
	args := os.Args[1:]
	if bundle := flagValue(args, "bundle", "b"); bundle != "" {
		clampFile(filepath.Join(bundle, "config.json"), true)
	}
	if process := flagValue(args, "process", "p"); process != "" {
		clampFile(process, false)
	}
	runc := os.Getenv("MODELEVAL_RUNC")
	if runc == "" {
		runc = defaultRunc
	}
	err := syscall.Exec(runc, append([]string{"runc"}, args...), os.Environ())
	fmt.Fprintf(os.Stderr, "runc-wrapper: exec %s: %v\n", runc, err)
	os.Exit(127)
}

// flagValue returns the value of --long or -short in any of the spellings runc accepts.
func flagValue(args []string, long, short string) string {
	for i, a := range args {
		for _, name := range []string{"--" + long, "-" + long, "-" + short} {
			if a == name && i+1 < len(args) {
				return args[i+1]
			}
			if v, ok := strings.CutPrefix(a, name+"="); ok {
				return v
			}
		}
	}
	return ""
}

// clampFile raises a negative oomScoreAdj to 0; the document's other fields are kept as they are.
func clampFile(path string, nested bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return // runc reports a missing bundle itself
	}
	var doc map[string]json.RawMessage
	if json.Unmarshal(data, &doc) != nil {
		return
	}
	target := doc
	var process map[string]json.RawMessage
	if nested {
		if json.Unmarshal(doc["process"], &process) != nil || process == nil {
			return
		}
		target = process
	}
	var score int
	if raw, ok := target["oomScoreAdj"]; !ok || json.Unmarshal(raw, &score) != nil || score >= 0 {
		return
	}
	target["oomScoreAdj"] = json.RawMessage("0")
	if nested {
		encoded, err := json.Marshal(process)
		if err != nil {
			return
		}
		doc["process"] = encoded
	}
	out, err := json.Marshal(doc)
	if err != nil || bytes.Equal(out, data) {
		return
	}
	tmp := path + ".clamp"
	if os.WriteFile(tmp, out, 0o600) == nil {
		_ = os.Rename(tmp, path)
	}
}
