package cmd

import "github.com/spf13/cobra"

// NewCmdExec returns `strata exec`.
func NewCmdExec() *cobra.Command {
	return &cobra.Command{Use: "exec", Hidden: true}
}
