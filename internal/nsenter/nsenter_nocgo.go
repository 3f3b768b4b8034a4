//go:build !cgo

package nsenter

// Available reports whether this binary can join a container's namespaces:
// not without cgo.
const Available = false
