package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/config"
	"github.com/pgkeep/pgkeep/internal/progress"
	"github.com/pgkeep/pgkeep/internal/repo"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// app holds what every command shares: I/O, the environment and the global
// flags. Commands get it explicitly; there is no global configuration.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	lookupEnv      func(string) (string, bool)

	configFile string
	settings   map[string]*string // global setting flags by name
	root       *cobra.Command
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, lookupEnv: lookupEnv, settings: map[string]*string{}}
	root := a.newRoot()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetContext(ctx)
	cmd, err := root.ExecuteC()
	var ee *exitError
	if err != nil && cmd != nil && cmd.Name() == "wal-fetch" && !errors.As(err, &ee) {
		// Any wal-fetch failure, bad flags included, must stop recovery:
		// PostgreSQL reads exit codes below 126 as "not in the archive".
		err = &exitError{code: exitFetchFailed, err: err}
	}
	return exitCode(err, stderr)
}

func (a *app) newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "pgkeep",
		Short: "Continuous PostgreSQL backup to object storage, and restore to any moment",
		Long: `pgkeep keeps a PostgreSQL cluster continuously backed up in a repository
(S3, any S3-compatible store, or a local directory) and restores it anywhere,
to the latest moment or to any point in time.

  archive_command = 'pgkeep wal-push %p'      archive every WAL segment
  pgkeep backup                               take a base backup while the database runs
  pgkeep restore --pgdata DIR                 rebuild the cluster on a fresh machine
  pgkeep agent                                stream WAL as it is written (RPO of seconds)

Every setting can be given as a flag, as an environment variable (PGKEEP_ and
the name in capitals, e.g. PGKEEP_REPO) or in the config file (name = value,
default ` + config.DefaultFile + `, or --config / PGKEEP_CONFIG). Flags beat the
environment, which beats the file. S3 credentials come from the standard AWS
chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a shared profile, or EC2/ECS
instance roles.`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &usageError{fmt.Errorf("%w (see 'pgkeep %s --help')", err, c.Name())}
	})
	pf := root.PersistentFlags()
	pf.StringVar(&a.configFile, "config", "", "config file (default $PGKEEP_CONFIG, else "+config.DefaultFile+" if it exists)")
	for _, s := range config.Settings() {
		v := new(string)
		a.settings[s.Name] = v
		help := s.Help + " [" + config.EnvName(s.Name) + "]"
		pf.StringVar(v, s.Name, s.Default, help)
		if s.Default == "false" {
			pf.Lookup(s.Name).NoOptDefVal = "true"
		}
	}
	root.AddCommand(
		a.newWalPushCmd(),
		a.newWalFetchCmd(),
		a.newWalPrefetchCmd(),
		a.newWalPushAheadCmd(),
		a.newBackupCmd(),
		a.newRestoreCmd(),
		a.newListCmd(),
		a.newDemoCmd(),
		a.newExpireCmd(),
		a.newPinCmd(true),
		a.newPinCmd(false),
		a.newVerifyCmd(),
		a.newStatusCmd(),
		a.newKeyCmd(),
		a.newIdentityCmd(),
		a.newAgentCmd(),
	)
	a.root = root
	return root
}

// loadConfig merges the global flags that were set, the environment and the
// config file.
func (a *app) loadConfig(cmd *cobra.Command) (*config.Config, error) {
	flags := map[string]string{}
	for name, v := range a.settings {
		if f := cmd.Flags().Lookup(name); f != nil && f.Changed {
			flags[name] = *v
		}
	}
	cfg, err := config.Load(config.Sources{Flags: flags, Getenv: a.lookupEnv, ConfigFile: a.configFile})
	if err != nil {
		return nil, &usageError{err}
	}
	return cfg, nil
}

// openRepo loads the configuration and opens the repository.
func (a *app) openRepo(cmd *cobra.Command) (*repo.Repo, *config.Config, error) {
	cfg, err := a.loadConfig(cmd)
	if err != nil {
		return nil, nil, err
	}
	r, err := a.openRepoWith(cmd, cfg)
	return r, cfg, err
}

// openCatalog opens the configured repository and reads what it holds
// (catalog.Load): what list, status and expire start from.
func (a *app) openCatalog(cmd *cobra.Command) (*repo.Repo, *catalog.Catalog, error) {
	r, _, err := a.openRepo(cmd)
	if err != nil {
		return nil, nil, err
	}
	cat, err := catalog.Load(cmd.Context(), r)
	if err != nil {
		return nil, nil, err
	}
	return r, cat, nil
}

// openRepoWith opens the repository cfg describes, with its keys.
func (a *app) openRepoWith(cmd *cobra.Command, cfg *config.Config) (*repo.Repo, error) {
	return openRepository(cmd.Context(), cfg, nil, a.stderr)
}

func (a *app) env(name string) string {
	v, _ := a.lookupEnv(name)
	return v
}

// exactArgs is cobra.ExactArgs with a usage error.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return &usageError{fmt.Errorf("%s needs %s (see 'pgkeep %s --help')", cmd.CommandPath(), what, cmd.Name())}
		}
		return nil
	}
}

func absPath(p string) string {
	if p == "" || strings.HasPrefix(p, "/") {
		return p
	}
	wd, err := os.Getwd()
	if err != nil {
		return p
	}
	return wd + "/" + p
}

// progress returns the reporter for long operations: nothing when quiet,
// a bar on a terminal, else plain lines every few seconds on stderr.
func (a *app) progress(quiet bool) progress.Reporter {
	if quiet {
		return progress.Nop{}
	}
	if f, ok := a.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return progress.NewBar(a.stderr)
	}
	return progress.NewLines(a.stderr, 5*time.Second)
}

func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
