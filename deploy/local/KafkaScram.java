// Sets one user's SCRAM-SHA-512 password on the local stack's Kafka through the
// Admin API (AlterUserScramCredentials), as the stack's admin user.
//
// Run by deploy/local/services/kafka.py as a single-file source program with the
// Kafka jars on the class path:
//     java -cp '<cache>/kafka-libs/*' KafkaScram.java <bootstrap> <ca.pem> <admin> <user>
// The passwords come on standard input (the admin's, then the user's new one, a line
// each), never as arguments: a command line is readable by every local user.

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;

public class KafkaScram {
    public static void main(String[] args) throws Exception {
        if (args.length != 4) {
            System.err.println("usage: KafkaScram <bootstrap> <ca.pem> <admin user> <user>");
            System.exit(2);
        }
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String adminPassword = in.readLine();
        String newPassword = in.readLine();
        if (adminPassword == null || newPassword == null || newPassword.isEmpty()) {
            System.err.println("KafkaScram: expected two lines on stdin (admin password, new password)");
            System.exit(2);
        }
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        props.put("security.protocol", "SASL_SSL");
        props.put("sasl.mechanism", "SCRAM-SHA-512");
        props.put("ssl.truststore.type", "PEM");
        props.put("ssl.truststore.location", args[1]);
        props.put("sasl.jaas.config",
            "org.apache.kafka.common.security.scram.ScramLoginModule required username=\""
                + args[2] + "\" password=\"" + adminPassword + "\";");
        try (Admin admin = Admin.create(props)) {
            admin.alterUserScramCredentials(List.of(new UserScramCredentialUpsertion(
                    args[3], new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), newPassword)))
                .all().get();
        }
        System.out.println("scram credential set user=" + args[3]);
    }
}
