//! What a platform's answers may and may not choose for ferry: the scheme of the registry
//! (never plain HTTP unless the user said `--plain`).

mod common;

use common::platform::*;
use common::*;

#[test]
fn a_product_base_http_address_does_not_choose_plain_http() {
    // something listening where ProductBase points, to see whether ferry connects at all
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let p = FakePlatform::start(PlatformOpts::default());
    p.set_product_base(&format!("http://{addr}"), None, false);
    p.set_registry_admin(USER, PASSWORD);
    let mut args: Vec<String> = vec![
        "push".into(),
        fixture("oam-application").display().to_string(),
    ];
    args.extend(p.token_flags());
    let run = ferry(&args);
    assert_eq!(run.code, 7, "{}", run.all());
    assert!(
        run.stderr.contains(&format!(
            "ProductBase base names the registry as http://{addr}"
        )) && run.stderr.contains("--plain"),
        "{}",
        run.stderr
    );
    assert!(
        listener.accept().is_err(),
        "ferry connected to the server-chosen plain-HTTP registry"
    );
    assert!(!run.all().contains(PASSWORD));

    // said by the user, it is plain HTTP (against a real registry)
    let reg = Registry::start(RegistryOpts::default());
    p.set_product_base(&format!("http://{}", reg.host()), None, false);
    args.push("--plain".into());
    let run = ferry(&args);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stderr.contains("plain HTTP"), "{}", run.stderr);
    for (reference, _) in package_images(&fixture("oam-application")) {
        assert!(
            reg.skopeo_raw(&path_of(&reference)).is_some(),
            "{reference} did not land"
        );
    }
}

#[test]
fn an_http_platform_address_is_refused_a_pasted_console_url_is_accepted() {
    let reg = Registry::start(RegistryOpts::default());
    let p = FakePlatform::start(PlatformOpts::default());
    p.set_product_base(&reg.host(), None, false);
    let pkg = fixture("oam-application").display().to_string();
    let ca = p.ca().display().to_string();
    let run = ferry(&[
        "push",
        &pkg,
        "--platform-address",
        &p.url().replace("https://", "http://"),
        "--platform-token",
        TOKEN,
        "--plain",
    ]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("use https://") && run.stderr.contains("--platform-plain-http"),
        "{}",
        run.stderr
    );
    assert!(p.log().is_empty(), "{:?}", p.log());
    assert!(!run.all().contains(TOKEN));

    let console = format!("{}/console-platform/#/home", p.url());
    let run = ferry(&[
        "push",
        &pkg,
        "--platform-address",
        &console,
        "--platform-token",
        TOKEN,
        "--platform-ca-file",
        &ca,
        "--plain",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr
            .contains("the path \"/console-platform/\" was dropped"),
        "{}",
        run.stderr
    );
}

#[test]
fn push_without_a_destination_names_both_ways() {
    let run = ferry(&["push", fixture("oam-application").to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("give --platform-address") && run.stderr.contains("or --dest-repo"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_platforms_ca_is_also_trusted_for_the_registry_its_product_base_names() {
    let reg = Registry::start(RegistryOpts {
        tls: true,
        ..Default::default()
    });
    let p = FakePlatform::start(PlatformOpts::default());
    p.set_product_base(&reg.host(), None, false);
    // one CA file for both, as when one CA issued the platform's and the registry's certificates
    let both = p.dir.path().join("both.pem");
    let mut pem = std::fs::read(p.ca()).unwrap();
    pem.extend(std::fs::read(reg.ca()).unwrap());
    std::fs::write(&both, pem).unwrap();
    let pkg = fixture("oam-application").display().to_string();
    let run = ferry(&[
        "push",
        &pkg,
        "--platform-address",
        &p.url(),
        "--platform-token",
        TOKEN,
        "--platform-ca-file",
        both.to_str().unwrap(),
        "--no-auth",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr
            .contains("trusting --platform-ca-file for it too); TLS"),
        "{}",
        run.stderr
    );
    for (reference, _) in package_images(&fixture("oam-application")) {
        assert!(
            reg.skopeo_raw(&path_of(&reference)).is_some(),
            "{reference} did not land"
        );
    }
}
