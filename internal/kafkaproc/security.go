package kafkaproc

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// SASL mechanisms every SASL listener of a secured cluster enables.
const (
	MechanismPlain       = "PLAIN"
	MechanismScramSHA256 = "SCRAM-SHA-256"
	MechanismScramSHA512 = "SCRAM-SHA-512"
)

// Security asks [Start] for secured listeners on every node, next to the
// PLAINTEXT one (which the controller, inter-broker traffic and the start-up
// probes keep using):
//
//   - SSL: TLS, no client authentication;
//   - SASL_PLAINTEXT: SASL with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512;
//   - SASL_SSL: the same mechanisms over TLS.
//
// The brokers' certificate (SAN 127.0.0.1 and localhost) is signed by a CA
// made for the cluster with the JDK's keytool (keystore and truststore in
// PKCS12), under Dir/tls; [SecurityInfo] gives the CA as PEM. The SCRAM
// credentials are written into the metadata log when the storage is
// formatted (kafka-storage format --add-scram); the PLAIN users are listed
// in the listeners' JAAS configuration. No authorizer is configured: an
// authenticated user may do anything.
type Security struct {
	// Users maps SASL user names to passwords; each user can log in with
	// every mechanism. Default: one user "kavari" with a random password.
	// Names and passwords must be non-empty and consist of letters, digits
	// and "-_.@+".
	Users map[string]string
}

// SecurityInfo describes the secured listeners of a cluster started with
// [Options.Security]: what a client needs to connect to them.
type SecurityInfo struct {
	// SSL, SASLPlaintext and SASLSSL are the listeners' addresses
	// (127.0.0.1:port), in node order.
	SSL           []string
	SASLPlaintext []string
	SASLSSL       []string

	// CAPEM is the certificate (PEM) of the CA that signed the brokers'
	// certificate; CAFile is a file holding it.
	CAPEM  []byte
	CAFile string

	// Users maps the SASL user names to their passwords.
	Users map[string]string

	// Mechanisms are the SASL mechanisms the SASL listeners enable.
	Mechanisms []string
}

// TLSConfig returns a client TLS configuration that trusts only the
// cluster's CA.
func (s *SecurityInfo) TLSConfig() *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.CAPEM)
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// User returns a user name and its password (the first name in sorted
// order), for tests that need just one account.
func (s *SecurityInfo) User() (name, password string) {
	names := make([]string, 0, len(s.Users))
	for n := range s.Users {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "", ""
	}
	return names[0], s.Users[names[0]]
}

// Security returns the secured listeners of the cluster, or nil when it was
// started without [Options.Security].
func (c *Cluster) Security() *SecurityInfo {
	if c.sec == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	info := &SecurityInfo{
		CAPEM:      append([]byte(nil), c.sec.caPEM...),
		CAFile:     filepath.Join(c.sec.dir, "ca.pem"),
		Users:      map[string]string{},
		Mechanisms: []string{MechanismPlain, MechanismScramSHA256, MechanismScramSHA512},
	}
	for u, p := range c.sec.users {
		info.Users[u] = p
	}
	for _, n := range c.nodes {
		info.SSL = append(info.SSL, loopback(n.sslPort))
		info.SASLPlaintext = append(info.SASLPlaintext, loopback(n.saslPort))
		info.SASLSSL = append(info.SASLSSL, loopback(n.saslSSLPort))
	}
	return info
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// secState is what Start made for Options.Security: the key material and
// the users.
type secState struct {
	dir       string // Dir/tls: ca.p12, ca.pem, broker.p12, truststore.p12
	storePass string
	caPEM     []byte
	users     map[string]string
}

// validCredential reports whether s may appear in a JAAS configuration and
// a --add-scram argument without quoting.
func validCredential(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.@+", r)) {
			return false
		}
	}
	return true
}

// randomSecret returns n random letters and digits.
func randomSecret(n int) (string, error) {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b), nil
}

// setupSecurity checks opts.Security and makes the CA, the brokers'
// keystore and the truststore under c.dir/tls.
func (c *Cluster) setupSecurity(ctx context.Context) error {
	users := map[string]string{}
	for u, p := range c.opts.Security.Users {
		if !validCredential(u) || !validCredential(p) {
			return fmt.Errorf("kafkaproc: Security.Users: user %q or its password is empty or has characters other than letters, digits and \"-_.@+\"", u)
		}
		users[u] = p
	}
	if len(users) == 0 {
		p, err := randomSecret(20)
		if err != nil {
			return err
		}
		users["kavari"] = p
	}
	pass, err := randomSecret(24)
	if err != nil {
		return err
	}
	s := &secState{dir: filepath.Join(c.dir, "tls"), storePass: pass, users: users}
	if err := os.RemoveAll(s.dir); err != nil {
		return fmt.Errorf("kafkaproc: %w", err)
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("kafkaproc: %w", err)
	}
	begin := time.Now()
	if err := s.makeKeys(ctx, keytoolFor(c.java)); err != nil {
		return err
	}
	if s.caPEM, err = os.ReadFile(filepath.Join(s.dir, "ca.pem")); err != nil {
		return fmt.Errorf("kafkaproc: %w", err)
	}
	c.sec = s
	c.logf("kafkaproc: CA and broker certificate made with keytool in %s", time.Since(begin).Round(time.Millisecond))
	return nil
}

// keytoolFor returns the keytool of the JDK that java belongs to, or the
// one on PATH.
func keytoolFor(java string) string {
	if real, err := filepath.EvalSymlinks(java); err == nil {
		k := filepath.Join(filepath.Dir(real), "keytool")
		if _, err := os.Stat(k); err == nil {
			return k
		}
	}
	if k, err := exec.LookPath("keytool"); err == nil {
		return k
	}
	return "keytool"
}

// makeKeys runs keytool: a CA key pair, a broker key pair whose certificate
// the CA signs (-certreq, -gencert) and which is then stored with its chain,
// the CA as PEM, and a truststore holding the CA. Independent steps run in
// parallel (each is a short JVM run).
func (s *secState) makeKeys(ctx context.Context, keytool string) error {
	store := func(name string) []string {
		return []string{"-keystore", filepath.Join(s.dir, name), "-storetype", "PKCS12", "-storepass", s.storePass}
	}
	file := func(name string) string { return filepath.Join(s.dir, name) }
	const validity = "3650" // days: a kept test directory stays usable
	san := "SAN=ip:127.0.0.1,dns:localhost"
	steps := [][][]string{
		{
			append([]string{"-genkeypair", "-alias", "ca", "-keyalg", "EC", "-groupname", "secp256r1",
				"-dname", "CN=kafkaproc test CA", "-ext", "bc:c", "-validity", validity}, store("ca.p12")...),
			append([]string{"-genkeypair", "-alias", "broker", "-keyalg", "EC", "-groupname", "secp256r1",
				"-dname", "CN=localhost", "-ext", san, "-validity", validity}, store("broker.p12")...),
		},
		{
			append([]string{"-exportcert", "-rfc", "-alias", "ca", "-file", file("ca.pem")}, store("ca.p12")...),
			append([]string{"-certreq", "-alias", "broker", "-file", file("broker.csr")}, store("broker.p12")...),
		},
		{
			append([]string{"-gencert", "-rfc", "-alias", "ca", "-infile", file("broker.csr"), "-outfile", file("broker.pem"),
				"-validity", validity, "-ext", san, "-ext", "KU=digitalSignature", "-ext", "EKU=serverAuth"}, store("ca.p12")...),
		},
		{
			// The reply is the whole chain (broker, CA), so keytool needs
			// no trusted CA in the keystore to install it.
			append([]string{"-importcert", "-noprompt", "-alias", "broker", "-file", file("chain.pem")}, store("broker.p12")...),
			append([]string{"-importcert", "-noprompt", "-alias", "ca", "-file", file("ca.pem")}, store("truststore.p12")...),
		},
	}
	for i, step := range steps {
		if i == len(steps)-1 {
			leaf, err := os.ReadFile(file("broker.pem"))
			if err != nil {
				return fmt.Errorf("kafkaproc: %w", err)
			}
			ca, err := os.ReadFile(file("ca.pem"))
			if err != nil {
				return fmt.Errorf("kafkaproc: %w", err)
			}
			if err := os.WriteFile(file("chain.pem"), append(leaf, ca...), 0o600); err != nil {
				return fmt.Errorf("kafkaproc: %w", err)
			}
		}
		errs := make([]error, len(step))
		var wg sync.WaitGroup
		for j, args := range step {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[j] = runKeytool(ctx, keytool, args)
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return err
		}
	}
	return nil
}

// runKeytool runs keytool with a small, quickly started JVM.
func runKeytool(ctx context.Context, keytool string, args []string) error {
	jvm := []string{"-J-XX:TieredStopAtLevel=1", "-J-XX:+UseSerialGC", "-J-XX:-UsePerfData", "-J-Xmx64m"}
	cmd := exec.CommandContext(ctx, keytool, append(jvm, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("kafkaproc: keytool %s: %v\n%s", args[0], err, strings.TrimSpace(string(out)))
	}
	return nil
}

// securityProps returns the server.properties entries of the secured
// listeners (the same on every node).
func (s *secState) securityProps() [][2]string {
	var plain strings.Builder
	plain.WriteString("org.apache.kafka.common.security.plain.PlainLoginModule required")
	for _, u := range sortedKeys(s.users) {
		fmt.Fprintf(&plain, " user_%s=\"%s\"", u, s.users[u])
	}
	plain.WriteString(";")
	const scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
	props := [][2]string{
		{"ssl.keystore.type", "PKCS12"},
		{"ssl.keystore.location", filepath.Join(s.dir, "broker.p12")},
		{"ssl.keystore.password", s.storePass},
		{"ssl.key.password", s.storePass},
		{"ssl.truststore.type", "PKCS12"},
		{"ssl.truststore.location", filepath.Join(s.dir, "truststore.p12")},
		{"ssl.truststore.password", s.storePass},
		{"ssl.client.auth", "none"},
		{"sasl.enabled.mechanisms", strings.Join([]string{MechanismPlain, MechanismScramSHA256, MechanismScramSHA512}, ",")},
	}
	for _, l := range []string{"sasl_plaintext", "sasl_ssl"} {
		props = append(props,
			[2]string{"listener.name." + l + ".plain.sasl.jaas.config", plain.String()},
			[2]string{"listener.name." + l + ".scram-sha-256.sasl.jaas.config", scram},
			[2]string{"listener.name." + l + ".scram-sha-512.sasl.jaas.config", scram},
		)
	}
	return props
}

// scramArgs returns the storage tool's --add-scram arguments: one
// credential per user and SCRAM mechanism.
func (s *secState) scramArgs() []string {
	var args []string
	for _, u := range sortedKeys(s.users) {
		for _, m := range []string{MechanismScramSHA256, MechanismScramSHA512} {
			args = append(args, "--add-scram", fmt.Sprintf("%s=[name=%s,password=%s]", m, u, s.users[u]))
		}
	}
	return args
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
