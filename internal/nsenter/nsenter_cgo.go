//go:build cgo

package nsenter

/*
#cgo CFLAGS: -Wall
extern void strata_nsenter(void);
void __attribute__((constructor)) strata_nsenter_init(void) { strata_nsenter(); }
*/
import "C"

// Available reports whether this binary can join a container's namespaces.
const Available = true
