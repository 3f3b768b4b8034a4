// Package cgroups holds a container to its limits (memory, CPU time,
// processes) with Linux control groups, on cgroup v1, v2 and hybrid hosts.
//
// TODO: the design note (v1, v2, hybrid and why).
package cgroups
