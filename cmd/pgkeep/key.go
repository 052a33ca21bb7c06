package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/pgkeep/pgkeep/internal/crypt"
)

func (a *app) newKeyCmd() *cobra.Command {
	key := &cobra.Command{
		Use:   "key",
		Short: "Manage encryption keys",
		Long: `Client-side encryption with age. A repository is encrypted when the first
write to it is given recipients (--age-recipients FILE or
PGKEEP_AGE_RECIPIENTS): a file of age public keys (age1...), one per line, or
a single line passphrase:SECRET. From then on every object is encrypted;
writers (wal-push, backup) need nothing secret, and a writer whose
recipients file differs is refused. Readers (restore, wal-fetch, verify,
list, status, expire) need an identity file (--age-identity FILE or
PGKEEP_AGE_IDENTITY): the matching secret keys (AGE-SECRET-KEY-1...) or the
passphrase line. Keep the identity file off the database host's backups.`,
	}
	var out string
	gen := &cobra.Command{
		Use:   "generate --output FILE",
		Short: "Write a new key pair: FILE (identity, secret) and FILE.pub (recipient)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return &usageError{errors.New("key generate needs --output FILE (the secret identity file; FILE.pub gets the public key)")}
			}
			id, rec, err := crypt.GenerateKeyPair()
			if err != nil {
				return err
			}
			f, err := os.OpenFile(out, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return fmt.Errorf("writing the identity file (it must not exist yet): %w", err)
			}
			_, err = fmt.Fprintf(f, "# pgkeep identity (secret): %s\n%s\n", crypt.Fingerprint(rec), id)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(out)
				return err
			}
			if err := os.WriteFile(out+".pub", []byte(fmt.Sprintf("# pgkeep recipient: %s\n%s\n", crypt.Fingerprint(rec), rec)), 0o644); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "identity (secret) %s\nrecipient (public) %s.pub: %s (%s)\n", out, out, rec, crypt.Fingerprint(rec))
			return nil
		},
	}
	gen.Flags().StringVarP(&out, "output", "o", "", "identity file to create (mode 0600); the public key goes to FILE.pub")
	key.AddCommand(gen)
	return key
}
