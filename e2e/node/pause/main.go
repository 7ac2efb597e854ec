// The pod sandbox's process for the e2e node: it holds the pod's namespaces open, reaps the
// orphans it inherits, and exits when the runtime stops the sandbox. No registry serves images to
// the sealed node, so build-infra.sh builds this and cluster.sh packs it as the pause image.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		reapAll()
	}
}

// reapAll collects every exited child: several may have exited behind one SIGCHLD.
func reapAll() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
