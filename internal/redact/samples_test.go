package redact

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// innocent reads the diagnostic outputs in testdata/innocent (df, ps, ss,
// journalctl, dmesg, sysctl, package lists, env, config files), none of
// which holds a secret.
func innocent(t testing.TB) map[string]string {
	t.Helper()
	files, err := filepath.Glob("testdata/innocent/*.txt")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	out := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		out[filepath.Base(f)] = string(b)
	}
	return out
}

func TestInnocentOutputUnchanged(t *testing.T) {
	for name, text := range innocent(t) {
		r := Redact(text)
		if r.Text != text {
			in, out := strings.Split(text, "\n"), strings.Split(r.Text, "\n")
			for i := range min(len(in), len(out)) {
				require.Equal(t, in[i], out[i], "%s line %d", name, i+1)
			}
		}
		require.Zero(t, r.Redactions, name)
	}
}

// plant is a secret in the context that carries it. secrets are the
// parts that must not survive, each at least 8 bytes so that finding one
// in the output is never a coincidence.
type plant struct {
	text    string
	secrets []string
}

const (
	pemRSA1 = "MIIEpAIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB"
	pemRSA2 = "aFDrBz9vFqU4yVkzSsMGsVzNWdKxN0uCbY1fE1sVjP0g8r1AAhLX9Q2v7zG3yqQk"
	pemSSH  = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAlwAAAAdzc2gtcn"
	pemEC   = "MHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5CB04fSeQ6tF1aY/PuoAoGCCqGSM49"
	pemPGP  = "lQOYBGWgHxsBCADXk2nT0mZq8aTfqVw5d3Lr9tq3Hn2vJYkR8sPz4LmN0bC1xE7w"
	pemGCP  = "MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDJ8z0pW1Yk4t9Q"
	pemEnc  = "MIIFHzBJBgkqhkiG9w0BBQ0wPDAbBgkqhkiG9w0BBQwwDgQIkR2p9lT3dQgCAggA"
)

var plants = []plant{
	{"> Authorization: Bearer pLnt-b34rer-T0ken-0001", []string{"pLnt-b34rer-T0ken-0001"}},
	{"curl -sS -H 'Authorization: Bearer pLntB34rerT0ken0002' https://api.example.com/v1", []string{"pLntB34rerT0ken0002"}},
	{"authorization: basic cm9vdDpwTG50LWJhc2ljLTAwMDM=", []string{"cm9vdDpwTG50LWJhc2ljLTAwMDM="}},
	{"proxy said: bearer pLntBareBearer0004xyz", []string{"pLntBareBearer0004xyz"}},
	{"Authorization: Basic dXNlcjpwTG50QmFzaWMwMDA1", []string{"dXNlcjpwTG50QmFzaWMwMDA1"}},
	{"token eyJhbGciOiJSUzI1NiIsImtpZCI6InBsbnQifQ.eyJzdWIiOiJwbG50LTAwMDYifQ.c2lnbmF0dXJlLXBsbnQtMDAwNg in log", []string{"eyJhbGciOiJSUzI1NiIsImtpZCI6InBsbnQifQ", "eyJzdWIiOiJwbG50LTAwMDYifQ", "c2lnbmF0dXJlLXBsbnQtMDAwNg"}},
	{"AWS_ACCESS_KEY_ID=AKIAPLNTPLNT00000007", []string{"PLNTPLNT00000007"}},
	{"credentials: ASIAPLNTPLNT00000008 expired", []string{"PLNTPLNT00000008"}},
	{"aws_secret_access_key = pLnt/AwsSecretKey0009+abcdefghijklmnopqrst", []string{"pLnt/AwsSecretKey0009+abcdefghijklmnopqrst"}},
	{"AWS_SECRET_ACCESS_KEY=pLnt/AwsSecretKey0010+abcdefghijklmnopqrst", []string{"pLnt/AwsSecretKey0010+abcdefghijklmnopqrst"}},
	{`{"type": "service_account", "private_key_id": "0011pLnt9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c", "private_key": "-----BEGIN PRIVATE KEY-----\n` + pemGCP + `\n-----END PRIVATE KEY-----\n", "client_email": "sa@proj.iam.gserviceaccount.com"}`, []string{"0011pLnt9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c", pemGCP}},
	{"maps: AIzaSyPLNT0012-abcdefghijklmnopqrstuvwx", []string{"SyPLNT0012-abcdefghijklmnopqrstuvwx"}},
	{"-----BEGIN RSA PRIVATE KEY-----\n" + pemRSA1 + "\n" + pemRSA2 + "\n-----END RSA PRIVATE KEY-----", []string{pemRSA1, pemRSA2}},
	{"-----BEGIN OPENSSH PRIVATE KEY-----\n" + pemSSH + "\n-----END OPENSSH PRIVATE KEY-----", []string{pemSSH}},
	{"-----BEGIN EC PRIVATE KEY-----\n" + pemEC + "\n-----END EC PRIVATE KEY-----", []string{pemEC}},
	{"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n" + pemPGP + "\n=pLnT\n-----END PGP PRIVATE KEY BLOCK-----", []string{pemPGP}},
	{"-----BEGIN ENCRYPTED PRIVATE KEY-----\n" + pemEnc + "\n-----END ENCRYPTED PRIVATE KEY-----", []string{pemEnc}},
	{"password=pLntPassword0013", []string{"pLntPassword0013"}},
	{"passwd=pLntPasswd0014", []string{"pLntPasswd0014"}},
	{"Server=db;Pwd=pLntPwd0015;Uid=app", []string{"pLntPwd0015"}},
	{"secret=pLntSecret0016", []string{"pLntSecret0016"}},
	{"https://hooks.example.com/x?token=pLntToken0017&y=1", []string{"pLntToken0017"}},
	{"api_key=pLntApiKey0018 apikey=pLntApiKey0019", []string{"pLntApiKey0018", "pLntApiKey0019"}},
	{"access_key=pLntAccessKey0020", []string{"pLntAccessKey0020"}},
	{"client_secret=pLntClientSecret0021", []string{"pLntClientSecret0021"}},
	{`{"user": "app", "password": "pLnt Json Pass 0022"}`, []string{"pLnt Json Pass 0022"}},
	{"db:\n  password: pLnt yaml pass 0023\n  host: db", []string{"pLnt yaml pass 0023"}},
	{"app --password pLntFlagPass0024 --verbose", []string{"pLntFlagPass0024"}},
	{"app --password=pLntFlagPass0025", []string{"pLntFlagPass0025"}},
	{"mysql -h db -u root -p'pLnt Mysql 0026' appdb", []string{"pLnt Mysql 0026"}},
	{"DB_PASSWORD=pLntDbPassword0027", []string{"pLntDbPassword0027"}},
	{"GITHUB_TOKEN=pLntGithubToken0028", []string{"pLntGithubToken0028"}},
	{"APP_SECRET_KEY_BASE=pLntSecretKeyBase0029", []string{"pLntSecretKeyBase0029"}},
	{"CI_JOB_TOKEN=pLntJobToken0030", []string{"pLntJobToken0030"}},
	{"ENCRYPTION_KEY=pLntEncryptionKey0031", []string{"pLntEncryptionKey0031"}},
	{"postgres://app:pLntUrlPass0032@db.internal:5432/app", []string{"pLntUrlPass0032"}},
	{"remote: ghp_pLnt0033abcdefghijklmnopqrstuvwxyz0123", []string{"pLnt0033abcdefghijklmnopqrstuvwxyz0123"}},
	{"gho_pLnt0034abcdefghijklmnopqrstuvwxyz0123 ghs_pLnt0035abcdefghijklmnopqrstuvwxyz0123", []string{"pLnt0034abcdefghijklmnopqrstuvwxyz0123", "pLnt0035abcdefghijklmnopqrstuvwxyz0123"}},
	{"github_pat_11PLNT0036abcdefghijklmn_opqrstuvwxyz0123456789", []string{"11PLNT0036abcdefghijklmn_opqrstuvwxyz0123456789"}},
	{"slack: xoxb-0037-pLnt-abcdefghijkl xoxp-0038-pLnt-abcdefghijkl", []string{"0037-pLnt-abcdefghijkl", "0038-pLnt-abcdefghijkl"}},
	{"openai key sk-pLnt0039abcdefghijklmnopqrstuvwxyz", []string{"pLnt0039abcdefghijklmnopqrstuvwxyz"}},
	{"static token nsk_pLnt0040abcdefghijkl", []string{"pLnt0040abcdefghijkl"}},
	{"Cookie: sessionid=pLntCookie0041; csrftoken=pLntCsrf0042", []string{"pLntCookie0041", "pLntCsrf0042"}},
	{"< Set-Cookie: sid=pLntSetCookie0043; Path=/; HttpOnly", []string{"pLntSetCookie0043"}},
	{"app:$6$pLntSalt$pLntShadowHash0044abcdefghijklmnop:19700:0:99999:7:::", []string{"pLntShadowHash0044abcdefghijklmnop"}},
	{"GRANT ALL ON *.* TO 'app'@'%' IDENTIFIED BY 'pLntSql0045';", []string{"pLntSql0045"}},
	{"machine ftp.example.com login bob password pLntNetrc0046", []string{"pLntNetrc0046"}},
	{"redis-cli -h cache -a pLntRedis0047 info", []string{"pLntRedis0047"}},
	{"sshpass -p pLntSshpass0048 ssh backup@host", []string{"pLntSshpass0048"}},
	{"curl -u deploy:pLntCurl0049 https://repo.example.com", []string{"pLntCurl0049"}},
	{"PATH=/usr/bin\x00API_TOKEN=pLntEnviron0050\x00HOME=/root", []string{"pLntEnviron0050"}},
	{"java -Dspring.datasource.password=pLntJava0051 -jar app.jar", []string{"pLntJava0051"}},
	{"X-Api-Key: pLntApiHeader0052", []string{"pLntApiHeader0052"}},
	{`{"auths":{"registry.example.com":{"auth":"cExudFVzZXI6cExudERvY2tlcjAwNTM="}}}`, []string{"cExudFVzZXI6cExudERvY2tlcjAwNTM="}},
	{"<password>pLntXml0054</password>", []string{"pLntXml0054"}},
	{"client-key-data: LS0tLS1CRUdJTpLnt0055", []string{"LS0tLS1CRUdJTpLnt0055"}},
	{`Environment="DB_PASS=pLnt Unit 0056"`, []string{"pLnt Unit 0056"}},
	{"wpa_passphrase: psk=pLntPsk0057abc", []string{"pLntPsk0057abc"}},
}

// planted is every plant, each on its own lines.
func planted() string {
	var b strings.Builder
	for _, p := range plants {
		b.WriteString(p.text)
		b.WriteByte('\n')
	}
	return b.String()
}

func requireNoSecret(t testing.TB, out string) {
	t.Helper()
	for _, p := range plants {
		for _, s := range p.secrets {
			require.NotContains(t, out, s, "from %q", p.text)
		}
	}
}

// Every kind of secret planted in one text with realistic output around
// it: none survives, and the output around it is untouched.
func TestPlantedSecretsInBigText(t *testing.T) {
	var b strings.Builder
	for _, text := range innocent(t) {
		b.WriteString(text)
	}
	before := b.String()
	doc := before + planted() + before
	r := Redact(doc)
	requireNoSecret(t, r.Text)
	require.True(t, strings.HasPrefix(r.Text, before))
	require.True(t, strings.HasSuffix(r.Text, before))
	n := 0
	for _, p := range plants {
		n += Redact(p.text).Redactions
		require.NotContains(t, String(p.text), "pLnt", "%q", p.text)
	}
	require.Equal(t, n, r.Redactions)
}

func FuzzString(f *testing.F) {
	for _, text := range innocent(f) {
		f.Add(text)
	}
	for _, p := range plants {
		f.Add(p.text)
	}
	for _, s := range []string{
		"", Marker, "password=" + Marker, "-----BEGIN PRIVATE KEY-----", "-----BEGIN RSA PRIVATE KEY-----\n[REDACTED]\n",
		"Authorization:", "Cookie: a", "eyJ.eyJ.", "://@", "a://b:@", "--password", "mysql -p", "\\\"password\\\":\\\"x",
		"password=\"", `"password": "a\`, "IDENTIFIED WITH", "$6$", "basic ====", "x/ghp_abcdefghijklmnopqrstuvwxyz0123456789.password: foo",
	} {
		f.Add(s)
	}
	tail := "\n" + planted()
	f.Fuzz(func(t *testing.T, s string) {
		out := String(s)
		again := Redact(out)
		if again.Text != out || again.Redactions != 0 {
			t.Fatalf("not idempotent:\n in %q\nout %q\nagain %q", s, out, again.Text)
		}
		withPlants := String(s + tail)
		for _, p := range plants {
			for _, sec := range p.secrets {
				if !strings.Contains(s, sec) && strings.Contains(withPlants, sec) {
					t.Fatalf("secret %q of %q survived after input %q", sec, p.text, s)
				}
			}
		}
	})
}

// benchText is about 256 KiB of diagnostic output with a secret every
// few kilobytes.
func benchText(b *testing.B, secrets bool) string {
	var sb strings.Builder
	samples := innocent(b)
	names := make([]string, 0, len(samples))
	for n := range samples {
		names = append(names, n)
	}
	slices.Sort(names)
	for i := 0; sb.Len() < 256<<10; i++ {
		sb.WriteString(samples[names[i%len(names)]])
		if secrets {
			sb.WriteString(plants[i%len(plants)].text)
			sb.WriteByte('\n')
		}
	}
	return sb.String()[:256<<10]
}

func BenchmarkString(b *testing.B) {
	for _, c := range []struct {
		name    string
		secrets bool
	}{{"innocent", false}, {"secrets", true}} {
		b.Run(c.name, func(b *testing.B) {
			text := benchText(b, c.secrets)
			b.SetBytes(int64(len(text)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				_ = String(text)
			}
		})
	}
}

// Inputs built to defeat a recogniser that rescans: every candidate on
// one long line, candidates inside candidates, unterminated quotes. Each
// runs at a rate comparable to ordinary text when String is linear.
func BenchmarkStringAdversarial(b *testing.B) {
	for _, unit := range []string{
		"password=x ", "Cookie: a=b ", "Authorization: x ", `"password": "x", `, `password="`,
		`\"password\":\"x`, "  password x", "machine password x ", "-----BEGIN PRIVATE KEY-----",
		"a://b:c@", "eyJaaaaaaaaaaaa.", "AKIA", "mysql -p ", "identified by ", "$6$.",
		"passwordpassword", "a_b_c_d_e_f_g_h_i_j_k_l_password", "sk-", "token: |\n",
	} {
		text := strings.Repeat(unit, (256<<10)/len(unit))
		b.Run(strings.TrimSpace(unit), func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			for range b.N {
				_ = String(text)
			}
		})
	}
}
